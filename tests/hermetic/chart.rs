//! The Helm chart, rendered by helm itself for each value set and read back into the Kubernetes
//! types the API server would take: what each toggle promises is there, what it removes is gone,
//! settings the chart refuses are refused. Needs helm (`make helm`: .tools/bin/helm, or $HELM);
//! `make helm-lint` runs it after `helm lint` and the CRD copy check.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, Namespace, ResourceQuota, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

const RELEASE: &str = "pyexec";
const NAMESPACE: &str = "pyexec";
const CHART: &str = "charts/pyexec";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn helm() -> PathBuf {
    let helm = std::env::var_os("HELM").map_or_else(|| root().join(".tools/bin/helm"), PathBuf::from);
    assert!(helm.is_file(), "{} is missing: run `make helm` (or set HELM to a helm binary)", helm.display());
    helm
}

/// `helm template` with these flags; the chart's own error when it refuses them.
fn template(flags: &[&str]) -> Result<String, String> {
    let out = Command::new(helm())
        .current_dir(root())
        .args(["template", RELEASE, CHART, "--namespace", NAMESPACE])
        .args(flags)
        .output()
        .expect("helm runs");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("helm writes UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// One rendering of the chart: every document, each known to deserialize into its kind's type.
struct Rendering {
    name: &'static str,
    documents: Vec<Value>,
}

/// `helm lint --strict` and `helm template` with these values; panics naming the value set if
/// either fails or a document is of a kind this file does not know.
fn render(name: &'static str, flags: &[&str]) -> Rendering {
    let lint = Command::new(helm())
        .current_dir(root())
        .args(["lint", "--strict", "--quiet", CHART, "--namespace", NAMESPACE])
        .args(flags)
        .output()
        .expect("helm runs");
    assert!(
        lint.status.success(),
        "{name}: helm lint --strict failed:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let yaml = template(flags).unwrap_or_else(|e| panic!("{name}: helm template failed:\n{e}"));
    // Kubernetes reads YAML 1.1: `defaultMode: 0444` is octal there.
    let options = serde_saphyr::options! { legacy_octal_numbers: true };
    let documents: Vec<Option<Value>> = serde_saphyr::from_multiple_with_options(&yaml, options)
        .unwrap_or_else(|e| panic!("{name}: the rendering is not YAML: {e}"));
    let rendering = Rendering { name, documents: documents.into_iter().flatten().collect() };
    rendering.each_document_has_its_type();
    rendering
}

fn refuses(name: &str, flags: &[&str]) {
    assert!(template(flags).is_err(), "{name}: helm template accepted values it should refuse ({flags:?})");
}

impl Rendering {
    /// Every object of kind K, deserialized into K.
    fn all<K: Resource + DeserializeOwned>(&self) -> Vec<K> {
        self.documents
            .iter()
            .filter(|d| d["kind"] == K::KIND && d["apiVersion"] == K::API_VERSION)
            .map(|d| {
                serde_json::from_value(d.clone())
                    .unwrap_or_else(|e| panic!("{}: a {} does not deserialize: {e}", self.name, K::KIND))
            })
            .collect()
    }

    fn count<K: Resource + DeserializeOwned>(&self) -> usize {
        self.all::<K>().len()
    }

    /// The one object of kind K named `name`.
    fn one<K: Resource + DeserializeOwned + Metadata<Ty = ObjectMeta>>(&self, name: &str) -> K {
        let mut found: Vec<K> =
            self.all::<K>().into_iter().filter(|o| o.metadata().name.as_deref() == Some(name)).collect();
        assert_eq!(found.len(), 1, "{}: expected one {} {name}", self.name, K::KIND);
        found.remove(0)
    }

    fn each_document_has_its_type(&self) {
        let known = self.count::<CustomResourceDefinition>()
            + self.count::<Namespace>()
            + self.count::<NetworkPolicy>()
            + self.count::<Deployment>()
            + self.count::<Service>()
            + self.count::<ServiceAccount>()
            + self.count::<Secret>()
            + self.count::<Role>()
            + self.count::<RoleBinding>()
            + self.count::<RuntimeClass>()
            + self.count::<ClusterRole>()
            + self.count::<ClusterRoleBinding>()
            + self.count::<ValidatingAdmissionPolicy>()
            + self.count::<ValidatingAdmissionPolicyBinding>()
            + self.count::<ResourceQuota>();
        assert_eq!(
            known,
            self.documents.len(),
            "{}: a rendered document is of a kind tests/hermetic/chart.rs does not read",
            self.name
        );
    }

    /// The one container of the Deployment `name`.
    fn container(&self, deployment: &str) -> Container {
        let pod = self.one::<Deployment>(deployment).spec.and_then(|s| s.template.spec).expect("a pod spec");
        assert_eq!(pod.containers.len(), 1, "{}: {deployment} has one container", self.name);
        pod.containers.into_iter().next().expect("one container")
    }

    /// The value of the environment variable `var` in the Deployment `deployment`'s container.
    fn env(&self, deployment: &str, var: &str) -> String {
        let env: Vec<EnvVar> = self.container(deployment).env.unwrap_or_default();
        let found = env.iter().find(|e| e.name == var);
        found.and_then(|e| e.value.clone()).unwrap_or_else(|| panic!("{}: {deployment} sets no {var}", self.name))
    }

    fn admission_policy(&self) -> ValidatingAdmissionPolicy {
        self.one::<ValidatingAdmissionPolicy>("pyexec-sandbox-pods")
    }

    /// The CEL expression of the admission policy's variable `name`.
    fn admission_variable(&self, name: &str) -> String {
        let variables = self.admission_policy().spec.and_then(|s| s.variables).unwrap_or_default();
        let found = variables.into_iter().find(|v| v.name == name);
        found
            .map(|v| v.expression)
            .unwrap_or_else(|| panic!("{}: the admission policy has no variable {name}", self.name))
    }

    /// The admission policy's validations as (expression, message) pairs.
    fn admission_validations(&self) -> Vec<(String, String)> {
        let validations = self.admission_policy().spec.and_then(|s| s.validations).unwrap_or_default();
        validations.into_iter().map(|v| (v.expression, v.message.unwrap_or_default())).collect()
    }

    fn has_validation_containing(&self, text: &str) -> bool {
        self.admission_validations().iter().any(|(expression, _)| expression.contains(text))
    }

    fn has_validation_message(&self, message: &str) -> bool {
        self.admission_validations().iter().any(|(_, m)| m == message)
    }

    /// Whether any object carries the annotation `key`.
    fn any_annotation(&self, key: &str) -> bool {
        self.documents.iter().any(|d| !d["metadata"]["annotations"][key].is_null())
    }
}

const API: &str = "pyexec-api";
const CONTROLLER: &str = "pyexec-controller";
const KEEP: &str = "helm.sh/resource-policy";

#[test]
fn the_default_values_render_every_resource_once() {
    let r = render("defaults", &[]);
    assert_eq!(r.count::<CustomResourceDefinition>(), 1);
    assert_eq!(r.count::<Namespace>(), 1);
    assert_eq!(r.count::<NetworkPolicy>(), 1);
    assert_eq!(r.count::<Deployment>(), 2);
    assert_eq!(r.count::<Service>(), 1);
    assert_eq!(r.count::<ServiceAccount>(), 2);
    assert_eq!(r.count::<Role>(), 2);
    assert_eq!(r.count::<RoleBinding>(), 2);
    assert_eq!(r.count::<RuntimeClass>(), 0);
    assert_eq!(r.count::<ClusterRole>(), 1);
    assert_eq!(r.count::<ClusterRoleBinding>(), 1);
    assert_eq!(r.count::<ValidatingAdmissionPolicy>(), 1);
    assert_eq!(r.count::<ValidatingAdmissionPolicyBinding>(), 1);
    assert_eq!(r.count::<ResourceQuota>(), 1);
    assert_eq!(r.count::<Secret>(), 1);

    let crd = r.one::<CustomResourceDefinition>("pythonexecutions.pyexec.dev");
    assert_eq!(crd.metadata.annotations.unwrap_or_default().get(KEEP).map(String::as_str), Some("keep"));
    assert_eq!(r.one::<Namespace>("pyexec-sandbox").metadata.name.as_deref(), Some("pyexec-sandbox"));
}

#[test]
fn the_default_deployments_run_the_api_and_the_controller_with_nsjail_in_gvisor() {
    let r = render("defaults", &[]);
    assert_eq!(r.container(API).command.unwrap_or_default(), ["pyexec", "serve", "--executor", "kubernetes"]);
    assert_eq!(r.container(CONTROLLER).command.unwrap_or_default(), ["pyexec", "controller"]);
    assert_eq!(r.env(CONTROLLER, "PYEXEC_SANDBOX_IMAGE"), "pyexec-sandbox:dev");
    assert_eq!(r.env(CONTROLLER, "PYEXEC_SANDBOX_SECURITY"), "nsjail");
    assert_eq!(r.env(CONTROLLER, "PYEXEC_RUNTIME_CLASS"), "gvisor");
    assert_eq!(r.env(CONTROLLER, "PYEXEC_GVISOR_HANDLERS"), "runsc");
    // The token file is readable by the container's non-root user (`0444`, octal as Kubernetes reads it).
    let volumes =
        r.one::<Deployment>(API).spec.and_then(|s| s.template.spec).and_then(|p| p.volumes).unwrap_or_default();
    let token = volumes.into_iter().find_map(|v| v.secret).expect("the api-token volume");
    assert_eq!(token.secret_name.as_deref(), Some("pyexec-api-token"));
    assert_eq!(token.default_mode, Some(0o444));
    // The controller reads its one RuntimeClass, nothing else.
    let rules = r.one::<ClusterRole>("pyexec-controller-runtimeclass").rules.unwrap_or_default();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].resource_names.as_deref(), Some(&["gvisor".to_owned()][..]));
    let quota = r.one::<ResourceQuota>("pyexec-sandbox").spec.and_then(|s| s.hard).unwrap_or_default();
    assert_eq!(quota.get("pods").map(|q| q.0.as_str()), Some("64"));
}

#[test]
fn both_pods_and_both_containers_have_the_restricted_security_context() {
    let r = render("defaults", &[]);
    let deployments = r.all::<Deployment>();
    assert_eq!(deployments.len(), 2);
    for deployment in deployments {
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let pod = deployment.spec.and_then(|s| s.template.spec).expect("a pod spec");
        let pod_context = pod.security_context.unwrap_or_default();
        assert_eq!(pod_context.run_as_non_root, Some(true), "{name}: pod runAsNonRoot");
        assert_eq!(pod_context.seccomp_profile.map(|p| p.type_).as_deref(), Some("RuntimeDefault"), "{name}: seccomp");
        assert_eq!(pod.containers.len(), 1, "{name}: one container");
        for container in pod.containers {
            let context = container.security_context.unwrap_or_default();
            assert_eq!(context.run_as_non_root, Some(true), "{name}: container runAsNonRoot");
            assert_eq!(context.allow_privilege_escalation, Some(false), "{name}: allowPrivilegeEscalation");
            assert_eq!(context.read_only_root_filesystem, Some(true), "{name}: readOnlyRootFilesystem");
            let drop = context.capabilities.and_then(|c| c.drop).unwrap_or_default();
            assert_eq!(drop, ["ALL"], "{name}: capabilities drop");
        }
    }
}

#[test]
fn the_default_admission_policy_admits_only_the_controllers_sandbox_pods() {
    let r = render("defaults", &[]);
    let binding = r.one::<ValidatingAdmissionPolicyBinding>("pyexec-sandbox-pods");
    let selector = binding.spec.and_then(|s| s.match_resources).and_then(|m| m.namespace_selector);
    let labels = selector.and_then(|s| s.match_labels).unwrap_or_default();
    assert_eq!(labels.get("kubernetes.io/metadata.name").map(String::as_str), Some("pyexec-sandbox"));
    assert_eq!(
        r.admission_variable("controller"),
        "request.userInfo.username == 'system:serviceaccount:pyexec:pyexec-controller'"
    );
    // The network probe is off: its user is empty.
    assert!(r.admission_variable("probe").starts_with("'' != '' && request.userInfo.username == '' &&"));
    assert!(r.has_validation_containing("object.spec.containers.all(c, c.image == 'pyexec-sandbox:dev')"));
    assert!(r.has_validation_containing(
        "c.securityContext.capabilities.add.all(a, !variables.probe && a in ['SYS_ADMIN', 'SETUID', 'SETGID'])))"
    ));
    assert!(r.has_validation_message("a sandbox container is not privileged"));
}

#[test]
fn crds_are_optional_and_kept_unless_told() {
    assert_eq!(render("no-crds", &["--set", "crds.install=false"]).count::<CustomResourceDefinition>(), 0);
    let not_kept = render("crds-not-kept", &["--set", "crds.keep=false"]);
    assert_eq!(not_kept.count::<CustomResourceDefinition>(), 1);
    assert!(!not_kept.any_annotation(KEEP), "crds-not-kept: still annotated keep");
}

#[test]
fn the_chart_can_create_the_runtime_class() {
    let r = render("runtimeclass", &["--set", "runtimeClass.create=true"]);
    assert_eq!(r.count::<RuntimeClass>(), 1);
    assert_eq!(r.all::<RuntimeClass>()[0].handler, "runsc");
}

#[test]
fn only_the_controller_may_attach_to_sandbox_pods_and_nobody_may_exec() {
    let r = render("defaults", &[]);
    let grants = |role: &str, resource: &str| -> Vec<String> {
        let rules = r.one::<Role>(role).rules.unwrap_or_default();
        rules
            .into_iter()
            .filter(|rule| rule.resources.as_deref().unwrap_or_default().iter().any(|x| x == resource))
            .flat_map(|rule| rule.verbs)
            .collect()
    };
    let mut attach = grants(CONTROLLER, "pods/attach");
    attach.sort();
    assert_eq!(attach, ["create", "get"], "the controller writes jobs through pods/attach");
    assert!(grants(CONTROLLER, "pods").contains(&"patch".to_string()), "claiming a warm pod is a patch");
    for role in [API, CONTROLLER] {
        assert!(grants(role, "pods/exec").is_empty(), "{role} may not exec");
    }
    assert!(grants(API, "pods/attach").is_empty(), "the API may not attach");
    assert_eq!(grants(API, "pods/log"), ["get"], "the API streams an execution's output from its pod's log");
    assert!(grants(API, "pods").is_empty(), "the API reads no pod beyond its log");
    assert_eq!(r.env(CONTROLLER, "PYEXEC_POD_POOL_SIZE"), "2");
    assert_eq!(r.env(CONTROLLER, "PYEXEC_POD_PRELOAD_MODULES"), "numpy,pandas");
    assert!(r.has_validation_containing("c.stdinOnce"), "admission pins the job's one way in");
}

#[test]
fn an_existing_sandbox_namespace_is_used_not_created() {
    let r = render(
        "existing-namespace",
        &["--set", "sandbox.namespace.create=false", "--set", "sandbox.namespace.name=executions"],
    );
    assert_eq!(r.count::<Namespace>(), 0);
    assert_eq!(r.env(CONTROLLER, "PYEXEC_WATCH_NAMESPACE"), "executions");
    for role in r.all::<Role>() {
        assert_eq!(role.metadata.namespace.as_deref(), Some("executions"));
    }
}

#[test]
fn without_gvisor_and_network_policy_neither_is_rendered() {
    let r = render(
        "no-gvisor-no-policy",
        &[
            "--set",
            "sandbox.runtimeClassName=",
            "--set",
            "sandbox.withoutGvisor=true",
            "--set",
            "sandbox.networkPolicy.enabled=false",
        ],
    );
    assert_eq!(r.count::<NetworkPolicy>(), 0);
    assert_eq!(r.count::<ClusterRole>(), 0);
    assert!(r.has_validation_containing("(variables.probe ? '' : '')"));
}

#[test]
fn admission_and_quota_can_be_turned_off() {
    let r = render(
        "no-admission-no-quota",
        &["--set", "sandbox.admission.enabled=false", "--set", "sandbox.resourceQuota.enabled=false"],
    );
    assert_eq!(r.count::<ValidatingAdmissionPolicy>(), 0);
    assert_eq!(r.count::<ValidatingAdmissionPolicyBinding>(), 0);
    assert_eq!(r.count::<ResourceQuota>(), 0);
}

#[test]
fn the_network_probe_user_is_admitted_by_name() {
    let r = render("network-probe", &["--set", "sandbox.admission.networkProbeUser=pyexec-admin"]);
    assert!(r
        .admission_variable("probe")
        .starts_with("'pyexec-admin' != '' && request.userInfo.username == 'pyexec-admin' &&"));
}

#[test]
fn the_sandbox_security_profile_sets_the_admitted_capabilities() {
    let restricted = render("restricted", &["--set", "sandbox.security=restricted"]);
    assert!(restricted
        .has_validation_containing("c.securityContext.capabilities.add.all(a, !variables.probe && a in [])))"));
    let privileged = render("privileged", &["--set", "sandbox.security=privileged"]);
    assert!(
        !privileged.has_validation_message("a sandbox container is not privileged"),
        "privileged: the policy still refuses privileged"
    );
}

#[test]
fn images_can_be_pinned_by_digest() {
    let r = render("digests", &["--set", "image.digest=sha256:0123", "--set", "sandbox.image.digest=sha256:4567"]);
    assert_eq!(r.container(API).image.as_deref(), Some("pyexec-service@sha256:0123"));
    assert_eq!(r.env(CONTROLLER, "PYEXEC_SANDBOX_IMAGE"), "pyexec-sandbox@sha256:4567");
}

#[test]
fn whole_numbers_from_a_values_file_reach_the_environment_without_an_exponent() {
    // Values files give floats.
    let values = std::env::temp_dir().join(format!("pyexec-chart-numbers-{}.yaml", std::process::id()));
    std::fs::write(&values, "sandbox:\n  limits:\n    maxMemoryMb: 1048576\n    timeoutSeconds: 2.5\n")
        .expect("writing a values file");
    let r = render("numbers", &["-f", values.to_str().expect("a UTF-8 temp path")]);
    let _ = std::fs::remove_file(&values);
    for deployment in [API, CONTROLLER] {
        assert_eq!(r.env(deployment, "PYEXEC_MAX_MEMORY_MB"), "1048576");
        assert_eq!(r.env(deployment, "PYEXEC_TIMEOUT_SECONDS"), "2.5");
    }
}

#[test]
fn settings_the_chart_cannot_honour_are_refused() {
    refuses("sandbox-is-release-namespace", &["--set", &format!("sandbox.namespace.name={NAMESPACE}")]);
    refuses(
        "isolating-the-release",
        &["--set", "sandbox.namespace.create=false", "--set", &format!("sandbox.namespace.name={NAMESPACE}")],
    );
    refuses("bad-log-format", &["--set", "logFormat=xml"]);
    refuses("bad-sandbox-security", &["--set", "sandbox.security=root"]);
    refuses("no-runtime-class-with-gvisor", &["--set", "sandbox.runtimeClassName="]);
}
