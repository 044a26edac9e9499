//! The kubernetes placement's answer to a client that goes away: its PythonExecution is deleted,
//! which stops its pod, instead of running to its limit for nobody.

use std::sync::Arc;

use ::kube::api::{Api, DeleteParams};

use crate::crd::PythonExecution;
use crate::metrics::Metrics;

/// Deletes a PythonExecution (best effort, in the background) if the request waiting for it is
/// dropped before `disarm`: its client went away, so nobody will read the result.
pub struct DeleteIfAbandoned {
    armed: Option<(Api<PythonExecution>, String, String)>,
    metrics: Arc<Metrics>,
}

impl DeleteIfAbandoned {
    pub fn new(api: Api<PythonExecution>, name: &str, id: &str, metrics: Arc<Metrics>) -> Self {
        DeleteIfAbandoned { armed: Some((api, name.to_string(), id.to_string())), metrics }
    }

    pub fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for DeleteIfAbandoned {
    fn drop(&mut self) {
        let Some((api, name, id)) = self.armed.take() else { return };
        self.metrics.cancelled.inc();
        tracing::info!(id = %id, execution = %name, "the client went away: deleting its PythonExecution");
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(execution = %name, "no runtime to delete an abandoned PythonExecution; its TTL will");
            return;
        };
        runtime.spawn(async move {
            if let Err(err) = api.delete(&name, &DeleteParams::background()).await {
                tracing::warn!(execution = %name, error = %err, "could not delete an abandoned PythonExecution");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ::kube::Client;

    use super::*;

    #[tokio::test]
    async fn an_abandoned_request_deletes_its_execution_and_an_answered_one_does_not() {
        let (service, mut handle) =
            tower_test::mock::pair::<http::Request<::kube::client::Body>, http::Response<::kube::client::Body>>();
        let api: Api<PythonExecution> = Api::namespaced(Client::new(service, "default"), "default");
        let metrics = Arc::new(Metrics::default());

        DeleteIfAbandoned::new(api.clone(), "pyx-answered", "id1", metrics.clone()).disarm();
        drop(DeleteIfAbandoned::new(api, "pyx-abandoned", "id2", metrics.clone()));

        let (request, send) =
            tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await.expect("a call").expect("open");
        assert_eq!(request.method(), http::Method::DELETE);
        assert_eq!(request.uri().path(), "/apis/pyexec.dev/v1alpha1/namespaces/default/pythonexecutions/pyx-abandoned");
        send.send_response(
            http::Response::builder().status(200).body(::kube::client::Body::from(b"{}".to_vec())).expect("response"),
        );
        assert_eq!(metrics.cancelled.get(), 1);
    }
}
