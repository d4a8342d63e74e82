//! The auth layer in front of an axum router and a tonic server, over real loopback sockets.

use std::sync::Arc;

use axum::Router;
use axum::extract::Extension;
use axum::routing::get;
use feast_auth::testing::{BadToken, TestIssuer};
use feast_auth::{AuthLayer, Authenticator, OidcValidator, User};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

async fn whoami(user: Option<Extension<User>>) -> String {
    user.map(|Extension(u)| u.username)
        .unwrap_or_else(|| "<anonymous>".into())
}

async fn serve_http(auth: Authenticator) -> String {
    let app = Router::new()
        .route("/whoami", get(whoami))
        .route("/health", get(|| async { "ok" }))
        .layer(AuthLayer::new(auth));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("{addr}")
}

/// (status, body) of a GET with an optional `authorization` value.
async fn get_with(addr: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", addr);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = tx
        .send_request(
            req.body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn http_requests_need_a_valid_token_except_public_paths() {
    let idp = TestIssuer::start().await;
    let auth = Authenticator::Oidc(Arc::new(OidcValidator::new(idp.settings()).unwrap()));
    let addr = serve_http(auth).await;

    assert_eq!(get_with(&addr, "/health", None).await, (200, "ok".into()));
    let (status, body) = get_with(&addr, "/whoami", None).await;
    assert_eq!(status, 401);
    assert_eq!(body, r#"{"detail":"Missing authentication token"}"#);
    let (status, _) = get_with(&addr, "/whoami", Some("Basic abc")).await;
    assert_eq!(status, 401);
    for kind in BadToken::ALL {
        let bearer = format!("Bearer {}", idp.bad_token(kind, "mallory"));
        let (status, body) = get_with(&addr, "/whoami", Some(&bearer)).await;
        assert_eq!(status, 401, "{kind:?}: {body}");
        assert!(body.starts_with(r#"{"detail":"#), "{kind:?}: {body}");
    }
    let bearer = format!("Bearer {}", idp.user_token("alice", &["reader"], &[]));
    assert_eq!(
        get_with(&addr, "/whoami", Some(&bearer)).await,
        (200, "alice".into())
    );
}

#[tokio::test]
async fn no_auth_passes_everything_without_a_user() {
    feast_auth::log_auth_mode("test", &Authenticator::NoAuth);
    let addr = serve_http(Authenticator::NoAuth).await;
    assert_eq!(
        get_with(&addr, "/whoami", None).await,
        (200, "<anonymous>".into())
    );
    assert_eq!(
        get_with(&addr, "/whoami", Some("garbage")).await,
        (200, "<anonymous>".into())
    );
}

#[tokio::test]
async fn grpc_requests_get_unauthenticated_and_reach_the_service_with_a_token() {
    let idp = TestIssuer::start().await;
    let auth = Authenticator::Oidc(Arc::new(OidcValidator::new(idp.settings()).unwrap()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(l);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(AuthLayer::new(auth))
            .add_routes(tonic::service::Routes::default())
            .serve_with_incoming(incoming)
            .await
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let call = |token: Option<String>| {
        let channel = channel.clone();
        async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let mut req = tonic::Request::new(());
            if let Some(t) = token {
                req.metadata_mut()
                    .insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            grpc.unary::<(), (), _>(
                req,
                http::uri::PathAndQuery::from_static("/feast.registry.RegistryServer/ListEntities"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err()
        }
    };
    let none = call(None).await;
    assert_eq!(none.code(), tonic::Code::Unauthenticated);
    assert_eq!(none.message(), "Missing authentication token");
    let expired = call(Some(idp.bad_token(BadToken::Expired, "x"))).await;
    assert_eq!(expired.code(), tonic::Code::Unauthenticated);
    let unsigned = call(Some(idp.bad_token(BadToken::AlgNone, "x"))).await;
    assert_eq!(unsigned.code(), tonic::Code::Unauthenticated);
    // Authenticated: the request reaches the (empty) router, which does not know the method.
    let ok = call(Some(idp.user_token("alice", &[], &[]))).await;
    assert_eq!(ok.code(), tonic::Code::Unimplemented);
}
