//! The cluster's guards around sandbox pods: the chart's ValidatingAdmissionPolicy (only the
//! controller's exact pod shape gets into the sandbox namespace) and its deny-all NetworkPolicy,
//! enforced (a probe pod without gVisor, where pods have a network device, reaches nothing).

use std::collections::BTreeMap;

use clap::{Parser, ValueEnum};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, HostPathVolumeSource, Namespace, Node, Pod, PodSpec, ResourceRequirements,
    SecurityContext, ServiceAccount, Volume,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, Config, ResourceExt};
use pyexec::controller::args::{PodSettings, SandboxSecurity};
use pyexec::controller::pod::{build_pod, security_context, LABEL_COMPONENT, LABEL_NAME};
use pyexec::crd::{PythonExecution, PythonExecutionSpec};
use pyexec::sandbox::{Isolation, LimitSettings};
use serde_json::Value;

use super::{run_case, Case, FINISH_TIMEOUT};

/// The label that marks the NetworkPolicy probe pod (sandbox.admission.networkProbeUser).
const PROBE_LABEL: &str = "pyexec.dev/network-probe";
/// How long the probe in the sandbox namespace may take to see every target blocked: the enforcer
/// learns a new pod's IP from the API server, after the pod's first packets may have left.
const ENFORCEMENT_WINDOW_SECONDS: u64 = 30;

/// The probe, run by the sandbox image's Python: argv[1] is a JSON list of [name, "tcp"|"udp",
/// host, port], argv[2] "once" or "until-blocked". Each round tries every target at once and
/// prints one JSON line {"round", "elapsed", "results": {name: outcome}}. An outcome is
/// "connected", "refused" or "answered" when a packet came back (the target was reached), or
/// "timeout", "unreachable" or an error name when nothing did.
const PROBE: &str = r#"
import json, socket, sys, threading, time

REACHED = ("connected", "refused", "answered")
DNS_QUERY = bytes.fromhex("abcd01000001000000000000") + b"\x0akubernetes\x07default\x00\x00\x01\x00\x01"

def probe(proto, host, port):
    try:
        if proto == "tcp":
            socket.create_connection((host, port), timeout=2).close()
            return "connected"
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        s.connect((host, port))
        s.send(DNS_QUERY)
        s.recv(512)
        return "answered"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except OSError as error:
        return "unreachable" if error.errno in (101, 113) else type(error).__name__

targets, mode = json.loads(sys.argv[1]), sys.argv[2]
start = time.monotonic()
for round in range(1, 100):
    results = {}
    def run(name, proto, host, port):
        results[name] = probe(proto, host, port)
    threads = [threading.Thread(target=run, args=t) for t in targets]
    for t in threads: t.start()
    for t in threads: t.join()
    elapsed = round_elapsed = time.monotonic() - start
    print(json.dumps({"round": round, "elapsed": elapsed, "results": results}), flush=True)
    blocked = not any(r in REACHED for r in results.values())
    if mode == "once" or blocked or elapsed > float(sys.argv[3]):
        break
"#;

/// The controller's pod settings, read back from its Deployment's environment.
async fn controller_pod_settings(case: &Case) -> (PodSettings, String) {
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(case.client.clone(), &case.settings.controller_namespace);
    let deployment = deployments.get(&case.settings.controller_deployment).await.expect("the controller Deployment");
    let pod_spec = deployment.spec.and_then(|s| s.template.spec).expect("a pod template");
    let account = pod_spec.service_account_name.clone().expect("the controller's service account");
    let env: BTreeMap<String, String> = pod_spec.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    let get = |name: &str, default: &str| env.get(name).cloned().unwrap_or_else(|| default.to_string());
    let settings = PodSettings {
        sandbox_image: get("PYEXEC_SANDBOX_IMAGE", "pyexec-sandbox:dev"),
        sandbox_image_pull_policy: get("PYEXEC_SANDBOX_IMAGE_PULL_POLICY", "IfNotPresent"),
        runtime_class: get("PYEXEC_RUNTIME_CLASS", "gvisor"),
        without_gvisor: get("PYEXEC_WITHOUT_GVISOR", "false") == "true",
        pod_cpu_millicores: get("PYEXEC_POD_CPU_MILLICORES", "1000").parse().expect("millicores"),
        pod_cpu_request_millicores: get("PYEXEC_POD_CPU_REQUEST_MILLICORES", "100").parse().expect("millicores"),
        sandbox_security: SandboxSecurity::from_str(&get("PYEXEC_SANDBOX_SECURITY", "nsjail"), true)
            .expect("a sandbox security profile"),
    };
    let user = format!("system:serviceaccount:{}:{account}", case.settings.controller_namespace);
    (settings, user)
}

#[derive(Parser)]
struct Limits {
    #[command(flatten)]
    limits: LimitSettings,
}

/// The pod the controller would build for an execution in the sandbox namespace.
fn controller_pod(case: &Case, settings: &PodSettings) -> Pod {
    let name = case.name("shape");
    let spec = PythonExecutionSpec {
        script: "def main():\n    return {}\n".into(),
        limits: None,
        files: None,
        ttl_seconds_after_finished: None,
    };
    let mut execution = PythonExecution::new(&name, spec);
    execution.metadata.namespace = Some(case.settings.namespace.clone());
    execution.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    let limits = Limits::parse_from(["e2e"]).limits.defaults().expect("default limits");
    build_pod(&execution, settings, &limits).expect("the controller's pod")
}

/// A client that acts as `user` (the admin impersonating it).
async fn impersonating(user: &str) -> Client {
    let mut config = Config::infer().await.expect("KUBECONFIG");
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).expect("a client")
}

/// Creates `pod` with dry run (admission runs, nothing is stored); the refusal message, if any.
async fn dry_run_refusal(pods: &Api<Pod>, pod: &Pod) -> Option<String> {
    match pods.create(&PostParams { dry_run: true, field_manager: None }, pod).await {
        Ok(_) => None,
        Err(kube::Error::Api(status)) => Some(status.message),
        Err(e) => panic!("creating a pod with dry run: {e}"),
    }
}

fn context(pod: &mut Pod) -> &mut SecurityContext {
    let container = &mut pod.spec.as_mut().expect("spec").containers[0];
    container.security_context.get_or_insert_with(SecurityContext::default)
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn admission_admits_only_the_controllers_pod_shape() {
    run_case("admission", |case| async move {
        let (settings, controller) = controller_pod_settings(&case).await;
        let shape = controller_pod(&case, &settings);
        let as_controller: Api<Pod> = Api::namespaced(impersonating(&controller).await, &case.settings.namespace);

        let refusal = dry_run_refusal(&as_controller, &shape).await;
        assert_eq!(refusal, None, "the controller's own pod shape is admitted");
        let refusal = dry_run_refusal(&case.pods, &shape).await.expect("the admin's pod is refused");
        assert!(refusal.contains("only the pyexec controller"), "{refusal}");

        type Change = fn(&mut Pod);
        let cases: [(&str, Change, &str); 7] = [
            (
                "hostPath",
                |p| {
                    p.spec.as_mut().expect("spec").volumes.get_or_insert_with(Vec::new).push(Volume {
                        name: "host".into(),
                        host_path: Some(HostPathVolumeSource { path: "/".into(), type_: None }),
                        ..Default::default()
                    })
                },
                "volumes are emptyDir or downwardAPI only",
            ),
            ("hostNetwork", |p| p.spec.as_mut().expect("spec").host_network = Some(true), "no host network"),
            ("hostPID", |p| p.spec.as_mut().expect("spec").host_pid = Some(true), "no host network, PID"),
            (
                "privileged",
                |p| {
                    // The API server itself refuses privileged with allowPrivilegeEscalation: false.
                    let context = context(p);
                    context.privileged = Some(true);
                    context.allow_privilege_escalation = None;
                },
                "is not privileged",
            ),
            (
                "image",
                |p| p.spec.as_mut().expect("spec").containers[0].image = Some("busybox:latest".into()),
                "runs only the sandbox image",
            ),
            (
                "capability",
                |p| {
                    let caps = context(p).capabilities.get_or_insert_with(Capabilities::default);
                    caps.add.get_or_insert_with(Vec::new).push("NET_ADMIN".into());
                },
                "adds none but",
            ),
            (
                "token",
                |p| p.spec.as_mut().expect("spec").automount_service_account_token = Some(true),
                // The ServiceAccount admission plugin has added the token's projected volume by
                // then, which the volumes rule names first.
                "tokens",
            ),
        ];
        for (what, change, expected) in cases {
            let mut pod = shape.clone();
            change(&mut pod);
            let refusal = dry_run_refusal(&as_controller, &pod).await;
            let refusal = refusal.unwrap_or_else(|| panic!("a controller pod with {what} was admitted"));
            assert!(refusal.contains(expected), "{what}: expected '{expected}' in: {refusal}");
            eprintln!("refused ({what}): {refusal}");
        }
    })
    .await;
}

/// [name, protocol, host, port] of everything a sandbox pod must not reach.
async fn probe_targets(case: &Case) -> Vec<(String, String, String, i32)> {
    let mut targets = Vec::new();
    let tcp = |name: &str, host: &str, port: i32| (name.to_string(), "tcp".to_string(), host.to_string(), port);
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(case.client.clone(), "default");
    let service = services.get("kubernetes").await.expect("the kubernetes service");
    let service_ip = service.spec.and_then(|s| s.cluster_ip).expect("its cluster IP");
    targets.push(tcp("api-server-service", &service_ip, 443));
    // The API server's own address and port behind the service (the node's, on a single node).
    let slices: Api<EndpointSlice> = Api::namespaced(case.client.clone(), "default");
    let lp = ListParams::default().labels("kubernetes.io/service-name=kubernetes");
    for slice in slices.list(&lp).await.expect("the kubernetes EndpointSlice").items {
        let port = slice.ports.iter().flatten().find_map(|p| p.port).unwrap_or(443);
        for address in slice.endpoints.iter().flat_map(|e| e.addresses.iter()) {
            targets.push(tcp(&format!("api-server-{address}"), address, port));
        }
    }
    let nodes: Api<Node> = Api::all(case.client.clone());
    for node in nodes.list(&ListParams::default()).await.expect("nodes").items {
        let status = node.status.unwrap_or_default();
        let kubelet = status.daemon_endpoints.and_then(|d| d.kubelet_endpoint).map(|e| e.port).unwrap_or(10250);
        for address in status.addresses.unwrap_or_default().into_iter().filter(|a| a.type_ == "InternalIP") {
            let ip = address.address;
            targets.push(tcp(&format!("kubelet-{ip}"), &ip, kubelet));
            targets.push(tcp(&format!("dns-tcp-{ip}"), &ip, 53));
            targets.push((format!("dns-udp-{ip}"), "udp".into(), ip.clone(), 53));
        }
    }
    let api_pods: Api<Pod> = Api::namespaced(case.client.clone(), &case.settings.controller_namespace);
    let lp = ListParams::default().labels("app.kubernetes.io/component=api");
    for pod in api_pods.list(&lp).await.expect("the API pods").items {
        if let Some(ip) = pod.status.and_then(|s| s.pod_ip) {
            targets.push(tcp(&format!("api-pod-{ip}"), &ip, 8080));
        }
    }
    targets.push(tcp("metadata-169.254.169.254", "169.254.169.254", 80));
    targets
}

/// The probe pod: the sandbox image's Python without gVisor (where pods have a network device),
/// as non-root without capabilities (the controller's restricted sandbox profile), in the shape the
/// admission policy allows the probe user.
fn probe_pod(name: &str, image: &str, pull_policy: &str, targets: &str, mode: &str) -> Pod {
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity("100m".into())),
        ("memory".to_string(), Quantity("64Mi".into())),
        ("ephemeral-storage".to_string(), Quantity("16Mi".into())),
    ]);
    let labels = BTreeMap::from([
        (LABEL_NAME.to_string(), "pyexec".to_string()),
        (LABEL_COMPONENT.to_string(), "sandbox".to_string()),
        (PROBE_LABEL.to_string(), "true".to_string()),
    ]);
    Pod {
        metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels), ..Default::default() },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "probe".into(),
                image: Some(image.into()),
                image_pull_policy: Some(pull_policy.into()),
                command: Some(vec![
                    "/usr/bin/python3".into(),
                    "-c".into(),
                    PROBE.into(),
                    targets.into(),
                    mode.into(),
                    ENFORCEMENT_WINDOW_SECONDS.to_string(),
                ]),
                resources: Some(ResourceRequirements {
                    requests: Some(resources.clone()),
                    limits: Some(resources),
                    ..Default::default()
                }),
                // The controller's own restricted profile (65534, no capabilities, RuntimeDefault
                // seccomp); the probe runs without gVisor.
                security_context: Some(security_context(SandboxSecurity::Restricted, Isolation::Host)),
                ..Default::default()
            }],
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            ..Default::default()
        }),
        status: None,
    }
}

/// Runs the probe pod in `namespace` to its end; every round's results, in order.
async fn run_probe(client: &Client, namespace: &str, pod: &Pod) -> Vec<Value> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let name = pod.name_any();
    pods.create(&PostParams::default(), pod).await.unwrap_or_else(|e| {
        panic!("creating the probe pod in {namespace}: {e} (is sandbox.admission.networkProbeUser this user?)")
    });
    let ended = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed")
    };
    let waited = tokio::time::timeout(FINISH_TIMEOUT, await_condition(pods.clone(), &name, ended)).await;
    let log = pods.logs(&name, &LogParams::default()).await.unwrap_or_else(|e| format!("(no log: {e})"));
    let _ = pods.delete(&name, &DeleteParams::default()).await;
    waited.unwrap_or_else(|_| panic!("the probe pod in {namespace} did not end; log: {log}")).expect("watching it");
    let rounds: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!rounds.is_empty(), "the probe in {namespace} printed no round; log: {log}");
    rounds
}

fn reached(outcome: &Value) -> bool {
    matches!(outcome.as_str(), Some("connected" | "refused" | "answered"))
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn the_network_policy_blocks_a_sandbox_pod_without_gvisor() {
    run_case("netpol", |case| async move {
        let (settings, _) = controller_pod_settings(&case).await;
        let targets = probe_targets(&case).await;
        let json_targets = serde_json::to_string(&targets).expect("json");
        let image = &settings.sandbox_image;
        let policy = &settings.sandbox_image_pull_policy;

        // The control: the same probe in a namespace without the policy reaches the API server;
        // otherwise the probe proves nothing.
        let control_ns = case.name("control");
        let namespaces: Api<Namespace> = Api::all(case.client.clone());
        let ns = Namespace {
            metadata: ObjectMeta { name: Some(control_ns.clone()), ..Default::default() },
            ..Default::default()
        };
        namespaces.create(&PostParams::default(), &ns).await.expect("the control namespace");
        // Pods can be created once the namespace's default service account exists.
        let accounts: Api<ServiceAccount> = Api::namespaced(case.client.clone(), &control_ns);
        let exists = |a: Option<&ServiceAccount>| a.is_some();
        tokio::time::timeout(FINISH_TIMEOUT, await_condition(accounts, "default", exists))
            .await
            .expect("the control namespace's default service account")
            .expect("watching it");
        let control =
            run_probe(&case.client, &control_ns, &probe_pod("probe", image, policy, &json_targets, "once")).await;
        let _ = namespaces.delete(&control_ns, &DeleteParams::background()).await;
        let results = &control[0]["results"];
        eprintln!("control (namespace without the policy): {results}");
        assert!(reached(&results["api-server-service"]), "the control probe cannot reach the API server: {results}");

        let sandbox = run_probe(
            &case.client,
            &case.settings.namespace,
            &probe_pod(&case.name("probe"), image, policy, &json_targets, "until-blocked"),
        )
        .await;
        eprintln!("sandbox namespace, first round: {}", sandbox[0]);
        let last = sandbox.last().expect("a round");
        eprintln!("sandbox namespace, last round: {last}");
        let results = last["results"].as_object().expect("results");
        assert_eq!(results.len(), targets.len(), "every target was probed: {last}");
        let reached_any: Vec<&String> = results.iter().filter(|(_, o)| reached(o)).map(|(n, _)| n).collect();
        assert!(
            reached_any.is_empty(),
            "within {ENFORCEMENT_WINDOW_SECONDS} s the sandbox pod still reached {reached_any:?}: {last}"
        );
    })
    .await;
}
