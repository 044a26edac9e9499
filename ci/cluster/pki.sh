#!/usr/bin/env bash
# Certificates (openssl, ECDSA P-256) and kubeconfigs of the local cluster, written under
# $CLUSTER_RUN_DIR/pki and $CLUSTER_RUN_DIR/kubeconfig. Made afresh at each cluster-up (about 1 s).
set -euo pipefail
# shellcheck source=ci/cluster/config.sh
. "$(dirname "$0")/config.sh"

mkdir -p "$PKI" "$KCFG"
chmod 0700 "$PKI"
cd "$PKI"

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 0600 "$1"; }

# CA
new_key ca.key
openssl req -x509 -new -key ca.key -subj "/CN=pyexec-local-cluster-ca" -days 30 -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# sign <name> <subject> <extendedKeyUsage> [subjectAltName]
sign() {
  local name=$1 subject=$2 eku=$3 san=${4:-}
  new_key "$name.key"
  openssl req -new -key "$name.key" -subj "$subject" -out "$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

sign apiserver "/CN=kube-apiserver" serverAuth \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$KUBERNETES_SERVICE_IP,IP:$NODE_IP"
sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
sign admin "/O=system:masters/CN=pyexec-admin" clientAuth
sign controller-manager "/CN=system:kube-controller-manager" clientAuth
sign scheduler "/CN=system:kube-scheduler" clientAuth
sign kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
sign kubelet-serving "/O=system:nodes/CN=system:node:$NODE_NAME" serverAuth "DNS:$NODE_NAME,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP"
# Service-account token signing key.
new_key sa.key
openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null

# kubeconfig <file> <cert name> <user>
kubeconfig() {
  local file=$1 cert=$2 user=$3
  cat >"$KCFG/$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pyexec-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 ca.crt)
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$cert.crt")
    client-key-data: $(base64 -w0 "$cert.key")
contexts:
- name: pyexec-local
  context: {cluster: pyexec-local, user: $user}
current-context: pyexec-local
EOF
  chmod 0600 "$KCFG/$file"
}
kubeconfig admin.kubeconfig admin pyexec-admin
kubeconfig controller-manager.kubeconfig controller-manager system:kube-controller-manager
kubeconfig scheduler.kubeconfig scheduler system:kube-scheduler
kubeconfig kubelet.kubeconfig kubelet-client "system:node:$NODE_NAME"
