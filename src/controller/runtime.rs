//! Failing closed on the sandbox's runtime: unless told explicitly that it runs without gVisor,
//! the controller starts only when the configured RuntimeClass exists and selects a gVisor
//! handler. A runc class, or no class at all, would otherwise run the gVisor profile (root with
//! SYS_ADMIN, seccomp unconfined) on the node's own kernel.

use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::Api;
use kube::Client;

use super::args::PodSettings;
use super::{Error, Result};

/// Why the controller refuses to run sandbox pods with its runtime settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuntimeRefusal {
    #[error(
        "no sandbox runtime class is set (--runtime-class is empty), so sandbox pods would run without \
         gVisor; name gVisor's RuntimeClass, or pass --without-gvisor (PYEXEC_WITHOUT_GVISOR=true, Helm \
         sandbox.withoutGvisor) to run them on the node's kernel knowingly"
    )]
    NoRuntimeClass,
    #[error(
        "the sandbox runtime class {class:?} does not exist; create it (handler one of {expected:?}), or pass \
         --without-gvisor to run sandbox pods without gVisor knowingly"
    )]
    Missing { class: String, expected: Vec<String> },
    #[error(
        "the sandbox runtime class {class:?} selects the handler {handler:?}, which is not gVisor's \
         (--gvisor-handlers: {expected:?}); sandbox pods would run on the node's kernel as root with \
         SYS_ADMIN. Point --runtime-class at gVisor's class, or pass --without-gvisor to run without it knowingly"
    )]
    NotGvisor { class: String, handler: String, expected: Vec<String> },
}

/// The RuntimeClass whose handler must be checked before the controller starts: none when it
/// was told it runs without gVisor.
pub fn class_to_check(pod: &PodSettings) -> Result<Option<&str>, RuntimeRefusal> {
    match (pod.without_gvisor, pod.runtime_class.as_str()) {
        (true, _) => Ok(None),
        (false, "") => Err(RuntimeRefusal::NoRuntimeClass),
        (false, class) => Ok(Some(class)),
    }
}

/// Accepts the class when its handler (None: the class does not exist) is one of gVisor's.
pub fn check_handler(class: &str, handler: Option<&str>, gvisor_handlers: &[String]) -> Result<(), RuntimeRefusal> {
    let expected = gvisor_handlers.to_vec();
    match handler {
        None => Err(RuntimeRefusal::Missing { class: class.into(), expected }),
        Some(handler) if gvisor_handlers.iter().any(|h| h == handler) => Ok(()),
        Some(handler) => Err(RuntimeRefusal::NotGvisor { class: class.into(), handler: handler.into(), expected }),
    }
}

/// Reads the configured RuntimeClass and refuses what is not gVisor's (see `check_handler`).
pub async fn verify(client: &Client, pod: &PodSettings, gvisor_handlers: &[String]) -> Result<()> {
    let Some(class) = class_to_check(pod)? else {
        tracing::warn!(
            runtime_class = %pod.runtime_class,
            "running sandbox pods WITHOUT gVisor (--without-gvisor): nsjail on the node's kernel is the only isolation"
        );
        return Ok(());
    };
    let classes: Api<RuntimeClass> = Api::all(client.clone());
    let found = classes.get_opt(class).await.map_err(Error::RuntimeClassGetFailed)?;
    check_handler(class, found.as_ref().map(|c| c.handler.as_str()), gvisor_handlers)?;
    tracing::info!(runtime_class = class, "sandbox pods run under gVisor");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{context, not_found, pod_settings};
    use serde_json::json;

    fn runsc() -> Vec<String> {
        vec!["runsc".to_string()]
    }

    #[test]
    fn gvisor_is_checked_by_default() {
        assert_eq!(class_to_check(&pod_settings()), Ok(Some("gvisor")));
    }

    #[test]
    fn no_runtime_class_is_refused_unless_told_to_run_without_gvisor() {
        let empty = PodSettings { runtime_class: String::new(), ..pod_settings() };
        assert_eq!(class_to_check(&empty), Err(RuntimeRefusal::NoRuntimeClass));
        let told = PodSettings { without_gvisor: true, ..empty };
        assert_eq!(class_to_check(&told), Ok(None));
    }

    #[test]
    fn without_gvisor_no_class_is_looked_up() {
        let runc = PodSettings { runtime_class: "runc".into(), without_gvisor: true, ..pod_settings() };
        assert_eq!(class_to_check(&runc), Ok(None));
    }

    #[test]
    fn a_gvisor_handler_is_accepted() {
        assert_eq!(check_handler("gvisor", Some("runsc"), &runsc()), Ok(()));
        let several = vec!["runsc".to_string(), "runsc-kvm".to_string()];
        assert_eq!(check_handler("fast", Some("runsc-kvm"), &several), Ok(()));
    }

    #[test]
    fn another_handler_is_refused_with_what_was_found_and_expected() {
        let err = check_handler("gvisor", Some("runc"), &runsc()).expect_err("runc is not gVisor");
        assert_eq!(
            err,
            RuntimeRefusal::NotGvisor { class: "gvisor".into(), handler: "runc".into(), expected: runsc() }
        );
        let message = err.to_string();
        assert!(message.contains("\"runc\"") && message.contains("--without-gvisor"), "{message}");
    }

    #[test]
    fn a_missing_class_is_refused() {
        let err = check_handler("gvisor", None, &runsc()).expect_err("missing");
        assert!(matches!(err, RuntimeRefusal::Missing { .. }));
    }

    async fn verify_against(answer_status: u16, answer: serde_json::Value) -> Result<()> {
        let (ctx, mut server) = context();
        let scenario = tokio::spawn(async move {
            let call = server.answer(answer_status, answer).await;
            call.expect(http::Method::GET, "/apis/node.k8s.io/v1/runtimeclasses/gvisor");
        });
        let verdict = verify(&ctx.client, &pod_settings(), &runsc()).await;
        scenario.await.expect("the controller read its RuntimeClass");
        verdict
    }

    #[tokio::test]
    async fn start_up_reads_the_runtime_class_and_accepts_runsc() {
        let class = json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "gvisor"}, "handler": "runsc"});
        verify_against(200, class).await.expect("runsc is gVisor's");
    }

    #[tokio::test]
    async fn start_up_refuses_a_runc_runtime_class() {
        let class = json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "gvisor"}, "handler": "runc"});
        let err = verify_against(200, class).await.expect_err("runc is not gVisor");
        assert!(matches!(err, Error::RuntimeRefused(RuntimeRefusal::NotGvisor { .. })), "{err}");
    }

    #[tokio::test]
    async fn start_up_refuses_a_missing_runtime_class() {
        let err = verify_against(404, not_found()).await.expect_err("no such class");
        assert!(matches!(err, Error::RuntimeRefused(RuntimeRefusal::Missing { .. })), "{err}");
    }
}
