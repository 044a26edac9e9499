//! The Kubernetes client of the API and the controller: kube's own stack (TLS from the inferred
//! config, its timeouts, base URI, authentication and extra headers), on connections with
//! TCP_NODELAY set.
//!
//! Without it, Nagle's algorithm holds a small write back until the API server acknowledges the
//! previous one. An attach session writes the job and then the end of stdin as two small
//! websocket frames, and the sandbox starts only at the end of stdin, so every warm execution
//! waited for the server's delayed acknowledgement, tens of milliseconds. kube builds its
//! connector without a way to set the option, hence this module.

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::{Client, Config};
use tower::{BoxError, ServiceBuilder};

/// A client for the cluster found the usual way (KUBECONFIG, ~/.kube/config, or the in-cluster
/// service account). A configured proxy gets kube's default stack, which knows proxies.
pub async fn connect() -> Result<Client, kube::Error> {
    let config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    if config.proxy_url.is_some() {
        return Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let http_client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http_client);
    Ok(Client::new(service, config.default_namespace))
}
