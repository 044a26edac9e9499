//! The sandbox container's security profiles (`SandboxSecurity`), and how `pyexec sandbox` is
//! told to start nsjail (under gVisor or on the node's kernel).

use k8s_openapi::api::core::v1::{AppArmorProfile, Capabilities, SeccompProfile, SecurityContext};

use crate::controller::args::{PodSettings, SandboxSecurity};
use crate::sandbox::Isolation;

/// How `pyexec sandbox` must start nsjail in the pod: under gVisor unless the controller was told
/// explicitly that it runs without it (the runtime class itself is checked at start-up, see
/// `runtime`), never inferred from the class's name.
pub fn sandbox_isolation(settings: &PodSettings) -> Isolation {
    if settings.without_gvisor {
        Isolation::Host
    } else {
        Isolation::Gvisor
    }
}

pub(super) fn isolation_name(isolation: Isolation) -> &'static str {
    match isolation {
        Isolation::Host => "host",
        Isolation::Gvisor => "gvisor",
    }
}

/// The sandbox container's security context for a profile (see `SandboxSecurity`) and the
/// isolation the sandbox runs under.
pub fn security_context(profile: SandboxSecurity, isolation: Isolation) -> SecurityContext {
    match profile {
        SandboxSecurity::Nsjail => SecurityContext {
            // On a kernel nsjail maps the script to uid 65534 (CAP_SETUID/SETGID) and creates
            // namespaces and mounts (CAP_SYS_ADMIN); the default seccomp and AppArmor profiles
            // refuse both. Inside gVisor the supervisor drops to 65534 itself (SETUID/SETGID) and
            // hands nsjail CAP_SYS_ADMIN as an ambient capability (docs/gvisor.md); the
            // pod's seccomp profile is not applied there (runsc without --oci-seccomp), gVisor
            // and nsjail's own policy are.
            // allowPrivilegeEscalation: false (no_new_privs) was tested inside gVisor only. The
            // API accepts it with SYS_ADMIN (it refuses only the spelling CAP_SYS_ADMIN).
            allow_privilege_escalation: (isolation == Isolation::Gvisor).then_some(false),
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(vec!["SYS_ADMIN".into(), "SETUID".into(), "SETGID".into()]),
            }),
            seccomp_profile: Some(SeccompProfile { type_: "Unconfined".into(), localhost_profile: None }),
            app_armor_profile: Some(AppArmorProfile { type_: "Unconfined".into(), localhost_profile: None }),
            ..Default::default()
        },
        SandboxSecurity::Privileged => SecurityContext {
            run_as_user: Some(0),
            privileged: Some(true),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        },
        SandboxSecurity::Restricted => SecurityContext {
            run_as_user: Some(65534),
            run_as_group: Some(65534),
            run_as_non_root: Some(true),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{build, env_of};
    use super::*;
    use crate::controller::pod::build_pod;
    use crate::controller::testing::{execution, limits, pod_settings};

    #[test]
    fn the_default_profile_grants_nsjail_its_capabilities_and_nothing_else() {
        let context = security_context(SandboxSecurity::Nsjail, Isolation::Host);
        let caps = context.capabilities.expect("capabilities");
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
        assert_eq!(caps.add, Some(vec!["SYS_ADMIN".to_string(), "SETUID".to_string(), "SETGID".to_string()]));
        assert_eq!(context.privileged, Some(false));
        assert_eq!(context.read_only_root_filesystem, Some(true));
        assert_eq!(context.allow_privilege_escalation, None, "untested without gVisor");
    }

    #[test]
    fn under_gvisor_the_supervisor_is_root_with_three_capabilities_and_no_new_privileges() {
        let context = security_context(SandboxSecurity::Nsjail, Isolation::Gvisor);
        assert_eq!(context.run_as_user, Some(0));
        let caps = context.capabilities.expect("capabilities");
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
        assert_eq!(caps.add, Some(vec!["SYS_ADMIN".to_string(), "SETUID".to_string(), "SETGID".to_string()]));
        assert_eq!(context.allow_privilege_escalation, Some(false));
        assert_eq!(context.read_only_root_filesystem, Some(true));
        assert_eq!(context.seccomp_profile.map(|p| p.type_).as_deref(), Some("Unconfined"));
    }

    #[test]
    fn the_sandbox_starts_nsjail_the_gvisor_way_unless_told_it_runs_without_gvisor() {
        assert_eq!(env_of(&build("def main(): return {}"))["PYEXEC_ISOLATION"], "gvisor");
        let settings = PodSettings { runtime_class: String::new(), without_gvisor: true, ..pod_settings() };
        let pod = build_pod(&execution("hello"), &settings, &limits()).expect("buildable");
        assert_eq!(env_of(&pod)["PYEXEC_ISOLATION"], "host");
        let context = pod.spec.expect("spec").containers[0].security_context.clone().expect("context");
        assert_eq!(context.allow_privilege_escalation, None);
    }

    #[test]
    fn a_runtime_class_name_alone_never_means_the_node_kernel_or_gvisor() {
        // Any other class name is still started the gVisor way (and refused at start-up if its
        // handler is not gVisor's); with --without-gvisor a named class runs the host way.
        let runc = PodSettings { runtime_class: "runc".into(), ..pod_settings() };
        assert_eq!(sandbox_isolation(&runc), Isolation::Gvisor);
        let told = PodSettings { without_gvisor: true, ..runc };
        assert_eq!(sandbox_isolation(&told), Isolation::Host);
    }

    #[test]
    fn the_restricted_profile_runs_as_nobody_without_capabilities() {
        let context = security_context(SandboxSecurity::Restricted, Isolation::Gvisor);
        assert_eq!(context.run_as_non_root, Some(true));
        assert_eq!(context.allow_privilege_escalation, Some(false));
        assert_eq!(context.capabilities.and_then(|c| c.add), None);
    }
}
