# Sourced by hack/container/*.sh.
#   podman_conf DIR             writes DIR/containers.conf, podman's configuration for one run (its
#                               database and run state in DIR, the image storage buildah's), and
#                               exports CONTAINERS_CONF. Containers get the slirp4netns network (a
#                               user-mode stack inside the container's namespace: no bridge, no
#                               iptables rule, no route on the host, so nothing collides with the
#                               cluster's 10.88.0.0/16) unless a command asks for another, and their
#                               default ulimits are this machine's hard limits (runc cannot raise
#                               them here).
#   podman_cgroups_remove [KEEP]  removes the cgroups podman made.
podman_conf() {
  local work=$1 nofile nproc pid_max
  # runc here cannot set RLIMIT_NPROC above the kernel's pid_max, whatever the hard limit.
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  pid_max=$(cat /proc/sys/kernel/pid_max)
  [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ] && nproc=$pid_max
  [ "$nofile" = unlimited ] && nofile=1048576
  cat >"$work/containers.conf" <<EOF
# Written by hack/container/podman-conf.sh for one run; removed with this directory.
[containers]
# Podman's default (1048576) is above this machine's hard limits, which runc cannot raise.
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
# A user-mode network stack in the container's own namespace: nothing on the host's network.
netns = "slirp4netns"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$work/events.log"
# Podman's database and run state live here, not in /var/lib/containers/storage/libpod and
# /run/libpod; the image storage stays buildah's.
static_dir = "$work/libpod"
tmp_dir = "$work/run"
volume_path = "$work/volumes"

[network]
network_config_dir = "$work/networks"
EOF
  export CONTAINERS_CONF=$work/containers.conf
}

# Removes the cgroups podman's cgroupfs manager makes in every hierarchy (libpod_parent and its
# conmon group), except those listed in KEEP (lines, as a snapshot of the host before the run).
podman_cgroups_remove() {
  local keep=${1:-} dir
  for dir in /sys/fs/cgroup/*/libpod_parent /sys/fs/cgroup/libpod_parent; do
    [ -d "$dir" ] || continue
    [ -n "$keep" ] && grep -qxF "$dir" <<<"$keep" && continue
    rmdir "$dir/conmon" 2>/dev/null || true
    rmdir "$dir" 2>/dev/null || true
  done
}
