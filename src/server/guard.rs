//! Who may drive the API: a layer in front of every route that refuses cross-origin browser
//! requests, Host names that betray DNS rebinding, and callers without the bearer token. The
//! decision is a pure function of the guard's settings and a few request headers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::loopback::is_loopback_host;
use super::AppState;
use crate::metrics::Rejection;

/// Routes a probe must reach without a token.
const OPEN_ROUTES: [&str; 2] = ["/healthz", "/readyz"];
/// At most this much of a refused Host or Origin is echoed in the error.
const ECHO_CHARS: usize = 100;

/// The guard's settings, fixed at start-up.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    /// Origins (`scheme://host[:port]`, lower case, no trailing slash) whose pages may call the API.
    allowed_origins: Vec<String>,
    /// Answer only Host names that are loopback ones: the service listens on a loopback address.
    loopback_hosts_only: bool,
    token: Option<ApiToken>,
}

impl Guard {
    pub fn new(allowed_origins: &[String], loopback_hosts_only: bool, token: Option<ApiToken>) -> Self {
        let allowed_origins = allowed_origins.iter().map(|o| normal_origin(o)).filter(|o| !o.is_empty()).collect();
        Guard { allowed_origins, loopback_hosts_only, token }
    }

    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }
}

/// The bearer token callers must present. Its Debug output never shows it.
#[derive(Clone)]
pub struct ApiToken(Arc<[u8]>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// Why the token file cannot be used; the service refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the API token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the API token file {0} is empty")]
    Empty(PathBuf),
    #[error(
        "the API token in {0} has characters an Authorization header cannot carry (use printable ASCII, no spaces)"
    )]
    Unusable(PathBuf),
}

impl ApiToken {
    /// Reads the token once at start-up; one trailing newline (as editors and `echo` write) is not
    /// part of it.
    pub fn read(path: &Path) -> Result<Self, TokenError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TokenError::Read { path: path.to_path_buf(), source })?;
        Self::from_text(&text).map_err(|err| match err {
            TokenError::Empty(_) => TokenError::Empty(path.to_path_buf()),
            _ => TokenError::Unusable(path.to_path_buf()),
        })
    }

    fn from_text(text: &str) -> Result<Self, TokenError> {
        let token = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(text);
        if token.is_empty() {
            return Err(TokenError::Empty(PathBuf::new()));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Unusable(PathBuf::new()));
        }
        Ok(ApiToken(token.as_bytes().into()))
    }

    /// The `Authorization` header that presents this token, for a client of a service that
    /// requires it (`pyexec mcp`). Marked sensitive, so that logs and debug output omit it.
    pub fn authorization(&self) -> HeaderValue {
        let mut bearer = b"Bearer ".to_vec();
        bearer.extend_from_slice(&self.0);
        // The token is printable ASCII (checked when read), so the value is always valid.
        let mut value = HeaderValue::from_bytes(&bearer).unwrap_or(HeaderValue::from_static("Bearer"));
        value.set_sensitive(true);
        value
    }

    /// Compares in time independent of where the first difference is (only a different length
    /// answers early, and says nothing about the token's bytes).
    fn matches(&self, presented: &str) -> bool {
        bool::from(self.0.as_ref().ct_eq(presented.as_bytes()))
    }
}

/// What the guard looks at. A header that is present but unreadable (not UTF-8, or repeated)
/// is `Some("")`, so that it is refused rather than taken as absent.
#[derive(Debug, Default)]
pub struct RequestFacts<'a> {
    pub path: &'a str,
    pub preflight: bool,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub authorization: Option<&'a str>,
}

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Host(String),
    Origin(String),
    TokenMissing,
    TokenWrong,
}

/// What happens to a request the guard lets through.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// On to the routes; `cors_origin` is an allowed origin to name in the response.
    Pass { cors_origin: Option<String> },
    /// A CORS preflight from an allowed origin, answered by the guard itself.
    Preflight { origin: String },
}

/// The guard's decision: Host first (a rebinding page is refused whatever it sends), then
/// Origin, then the token.
pub fn decide(guard: &Guard, facts: &RequestFacts) -> Result<Admission, Refusal> {
    if guard.loopback_hosts_only {
        if let Some(host) = facts.host {
            if !is_loopback_host(host) {
                return Err(Refusal::Host(echo(host)));
            }
        }
    }
    let cors_origin = match facts.origin {
        None => None,
        Some(origin) => {
            let origin = normal_origin(origin);
            if !guard.allowed_origins.contains(&origin) {
                return Err(Refusal::Origin(echo(facts.origin.unwrap_or_default())));
            }
            Some(origin)
        }
    };
    if let (true, Some(origin)) = (facts.preflight, &cors_origin) {
        // Browsers send preflights without credentials.
        return Ok(Admission::Preflight { origin: origin.clone() });
    }
    if let Some(token) = &guard.token {
        if !OPEN_ROUTES.contains(&facts.path) {
            let presented = facts.authorization.and_then(bearer).ok_or(Refusal::TokenMissing)?;
            if !token.matches(presented) {
                return Err(Refusal::TokenWrong);
            }
        }
    }
    Ok(Admission::Pass { cors_origin })
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn normal_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

fn echo(text: &str) -> String {
    text.chars().take(ECHO_CHARS).collect()
}

impl Refusal {
    fn into_error(self) -> ApiError {
        let challenge = |error: Option<&str>| {
            let value = match error {
                None => "Bearer realm=\"pyexec\"".to_string(),
                Some(error) => format!("Bearer realm=\"pyexec\", error=\"{error}\""),
            };
            HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("Bearer"))
        };
        match self {
            Refusal::Host(host) => ApiError::refused(
                StatusCode::MISDIRECTED_REQUEST,
                Rejection::Host,
                format!(
                    "Host {host:?} is not a loopback name: this service listens on loopback and answers only \
                     to localhost, 127.0.0.1 or [::1] (a guard against DNS rebinding)"
                ),
            ),
            Refusal::Origin(origin) => ApiError::refused(
                StatusCode::FORBIDDEN,
                Rejection::Origin,
                format!(
                    "Cross-origin requests from {origin:?} are refused: the origin is not in the service's \
                     --allowed-origins"
                ),
            ),
            Refusal::TokenMissing => ApiError::refused(
                StatusCode::UNAUTHORIZED,
                Rejection::TokenMissing,
                "This API needs a bearer token: send Authorization: Bearer <token>",
            )
            .with_header(header::WWW_AUTHENTICATE, challenge(None)),
            Refusal::TokenWrong => {
                ApiError::refused(StatusCode::UNAUTHORIZED, Rejection::TokenWrong, "The bearer token is not valid")
                    .with_header(header::WWW_AUTHENTICATE, challenge(Some("invalid_token")))
            }
        }
    }
}

/// One header's text; `Some("")` when it is repeated or not UTF-8.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some("");
    }
    Some(first.to_str().unwrap_or(""))
}

/// The middleware: refuses, answers a preflight, or passes the request on.
pub async fn enforce(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let facts = RequestFacts {
        path: request.uri().path(),
        preflight: request.method() == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD),
        // HTTP/2 carries the host in the URI instead.
        host: single(headers, &header::HOST).or_else(|| request.uri().authority().map(|a| a.as_str())),
        origin: single(headers, &header::ORIGIN),
        authorization: single(headers, &header::AUTHORIZATION),
    };
    match decide(&state.guard, &facts) {
        Err(refusal) => {
            let path = request.uri().path();
            tracing::info!(?refusal, path, "request refused by the API guard");
            refusal.into_error().into_response()
        }
        Ok(Admission::Preflight { origin }) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            add_cors(&mut response, &origin);
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
            headers
                .insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
            response
        }
        Ok(Admission::Pass { cors_origin }) => {
            let mut response = next.run(request).await;
            if let Some(origin) = cors_origin {
                add_cors(&mut response, &origin);
            }
            response
        }
    }
}

fn add_cors(response: &mut Response, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        response.headers_mut().insert(header::VARY, HeaderValue::from_static("origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> ApiToken {
        ApiToken::from_text(text).expect("token")
    }

    fn facts<'a>(path: &'a str) -> RequestFacts<'a> {
        RequestFacts { path, host: Some("localhost:8080"), ..Default::default() }
    }

    const PASS: Result<Admission, Refusal> = Ok(Admission::Pass { cors_origin: None });

    #[test]
    fn on_loopback_a_foreign_host_is_refused_and_a_missing_one_passes() {
        let guard = Guard::new(&[], true, None);
        let rebound = RequestFacts { host: Some("attacker.example:8080"), ..facts("/execute") };
        assert_eq!(decide(&guard, &rebound), Err(Refusal::Host("attacker.example:8080".into())));
        assert_eq!(decide(&guard, &facts("/execute")), PASS);
        assert_eq!(decide(&guard, &RequestFacts { host: None, ..facts("/execute") }), PASS);
        // Beyond loopback any Host is answered: the service is reached by other names.
        let open = Guard::new(&[], false, None);
        assert_eq!(decide(&open, &rebound), PASS);
    }

    #[test]
    fn an_origin_is_refused_unless_allowed() {
        let guard = Guard::new(&["https://App.example/".to_string()], true, None);
        let from = |origin| RequestFacts { origin: Some(origin), ..facts("/execute") };
        assert_eq!(decide(&guard, &from("https://evil.example")), Err(Refusal::Origin("https://evil.example".into())));
        assert_eq!(decide(&guard, &from("null")), Err(Refusal::Origin("null".into())));
        assert_eq!(decide(&guard, &from("")), Err(Refusal::Origin(String::new())));
        let allowed = decide(&guard, &from("https://app.example"));
        assert_eq!(allowed, Ok(Admission::Pass { cors_origin: Some("https://app.example".into()) }));
        // None are allowed by default, even a page on the service's own host.
        let closed = Guard::new(&[], true, None);
        assert!(matches!(decide(&closed, &from("http://localhost:8080")), Err(Refusal::Origin(_))));
    }

    #[test]
    fn the_host_is_checked_before_the_origin() {
        let guard = Guard::new(&["http://a.example".to_string()], true, None);
        let both = RequestFacts { host: Some("a.example"), origin: Some("http://a.example"), ..facts("/execute") };
        assert!(matches!(decide(&guard, &both), Err(Refusal::Host(_))));
    }

    #[test]
    fn a_preflight_from_an_allowed_origin_is_answered_without_a_token() {
        let guard = Guard::new(&["http://a.example".to_string()], false, Some(token("s3cret")));
        let preflight = RequestFacts { preflight: true, origin: Some("http://a.example"), ..facts("/execute") };
        assert_eq!(decide(&guard, &preflight), Ok(Admission::Preflight { origin: "http://a.example".into() }));
        let stranger = RequestFacts { origin: Some("http://b.example"), ..preflight };
        assert!(matches!(decide(&guard, &stranger), Err(Refusal::Origin(_))));
    }

    #[test]
    fn with_a_token_every_route_but_the_probes_needs_it() {
        let guard = Guard::new(&[], true, Some(token("s3cret")));
        for path in ["/execute", "/metrics", "/openapi.json", "/executions/x", "/nowhere"] {
            assert_eq!(decide(&guard, &facts(path)), Err(Refusal::TokenMissing), "{path}");
            let with = |authorization| RequestFacts { authorization: Some(authorization), ..facts(path) };
            assert_eq!(decide(&guard, &with("Bearer s3cret")), PASS, "{path}");
            assert_eq!(decide(&guard, &with("bearer  s3cret ")), PASS, "{path}");
            assert_eq!(decide(&guard, &with("Bearer s3cre")), Err(Refusal::TokenWrong));
            assert_eq!(decide(&guard, &with("Bearer s3cret2")), Err(Refusal::TokenWrong));
            assert_eq!(decide(&guard, &with("Basic czNjcmV0")), Err(Refusal::TokenMissing));
            assert_eq!(decide(&guard, &with("Bearer")), Err(Refusal::TokenMissing));
            assert_eq!(decide(&guard, &with("")), Err(Refusal::TokenMissing));
        }
        for path in OPEN_ROUTES {
            assert_eq!(decide(&guard, &facts(path)), PASS, "{path}");
        }
    }

    #[test]
    fn without_a_token_nothing_is_asked_for() {
        assert_eq!(decide(&Guard::new(&[], true, None), &facts("/execute")), PASS);
    }

    #[test]
    fn a_token_file_loses_one_trailing_newline_and_must_hold_a_token() {
        assert!(token("abc\n").matches("abc"));
        assert!(token("abc\r\n").matches("abc"));
        assert!(!token("abc\n").matches("abc\n"));
        assert!(matches!(ApiToken::from_text(""), Err(TokenError::Empty(_))));
        assert!(matches!(ApiToken::from_text("\n"), Err(TokenError::Empty(_))));
        assert!(matches!(ApiToken::from_text("two words"), Err(TokenError::Unusable(_))));
        assert!(matches!(ApiToken::from_text("abc\n\n"), Err(TokenError::Unusable(_))));
        assert_eq!(format!("{:?}", token("abc")), "ApiToken(<redacted>)");
    }

    #[test]
    fn a_client_presents_the_token_as_a_sensitive_bearer_header() {
        let header = token("s3cret\n").authorization();
        assert_eq!(header.to_str().ok(), Some("Bearer s3cret"));
        assert!(header.is_sensitive());
        assert_eq!(bearer(header.to_str().unwrap_or_default()), Some("s3cret"));
    }

    #[test]
    fn a_token_file_is_read_once_and_problems_name_the_file() {
        let dir = std::env::temp_dir().join(format!("pyexec-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("token");
        std::fs::write(&file, "from-a-file\n").expect("write");
        assert!(ApiToken::read(&file).expect("read").matches("from-a-file"));
        std::fs::write(&file, "").expect("write");
        let err = ApiToken::read(&file).expect_err("empty");
        assert_eq!(err.to_string(), format!("the API token file {} is empty", file.display()));
        assert!(matches!(ApiToken::read(&dir.join("absent")), Err(TokenError::Read { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
