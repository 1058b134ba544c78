//! Per-peer passwords (PROTOCOL.md §3.8): the identity picks the password and is bound to the
//! handshake; unknown identities get a decoy; per-identity rotation and revocation.

use super::*;
use crate::core::handshake::{ClientHello, Identity, ServerParams, HELLO_FIXED_LEN, PARAMS_LEN};
use crate::net::server::ServerSecrets;

fn id(name: &str) -> Identity {
    Identity::new(name).unwrap()
}

fn source(password: &[u8]) -> ServerKeySource {
    ServerKeySource::Password(password.to_vec().into(), FAST)
}

/// A server with passwords for "a" and "b", and a shared one if `shared`.
async fn peers_server(shared: Option<&[u8]>) -> Server {
    let secrets = ServerSecrets {
        shared: shared.map(source),
        peers: vec![(id("a"), source(b"pw-a")), (id("b"), source(b"pw-b"))],
        lookup: None,
    };
    Server::bind("127.0.0.1", 0, secrets, ServerConfig::default())
        .await
        .unwrap()
}

async fn dial(srv: &Server, identity: &str, password: &[u8]) -> Result<Connection> {
    let creds = Arc::new(Credentials::with_identity(id(identity), password));
    connect(
        "127.0.0.1",
        srv.local_addr().port(),
        &creds,
        &client_config(),
        0,
    )
    .await
}

fn stat(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_identity_authenticates_with_its_own_password_only() {
    let srv = peers_server(None).await;
    let conn = dial(&srv, "a", b"pw-a").await.unwrap();
    let accepted = srv.accept().await.unwrap().connection();
    assert_eq!(accepted.peer_identity(), &id("a"));
    conn.send(Bytes::from_static(b"from a")).await.unwrap();
    assert_eq!(&accepted.recv().await.unwrap().into_bytes()[..], b"from a");
    // Peer a's password does not authenticate as b; nor an unknown or anonymous identity.
    for (who, pw) in [("b", &b"pw-a"[..]), ("c", b"pw-a"), ("", b"pw-a")] {
        let err = dial(&srv, who, pw).await.unwrap_err();
        assert!(matches!(err, Error::Authentication(_)), "{who:?}: {err}");
    }
    assert_eq!(
        stat(&srv.stats().unknown_identities),
        2,
        "c and the anonymous one"
    );
    assert_eq!(stat(&srv.stats().auth_failures), 3);
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_password_serves_identities_without_their_own() {
    let srv = peers_server(Some(b"shared")).await;
    let conn = dial(&srv, "c", b"shared").await.unwrap();
    assert_eq!(
        srv.accept().await.unwrap().connection().peer_identity(),
        &id("c")
    );
    drop(conn);
    dial(&srv, "", b"shared").await.unwrap();
    // An identity with a password of its own no longer uses the shared one.
    let err = dial(&srv, "a", b"shared").await.unwrap_err();
    assert!(matches!(err, Error::Authentication(_)), "{err}");
    dial(&srv, "a", b"pw-a").await.unwrap();
    srv.close().await;
}

/// What a prober sees for an identity: the 104 parameter bytes, fresh nonce and share aside.
async fn probe(srv: &Server, identity: &str) -> ServerParams {
    let mut s = tokio::net::TcpStream::connect(srv.local_addr())
        .await
        .unwrap();
    let hello = ClientHello::new(0, id(identity)).encode();
    assert_eq!(hello.len(), HELLO_FIXED_LEN + identity.len());
    s.write_all(&hello).await.unwrap();
    let mut params = [0u8; PARAMS_LEN];
    s.read_exact(&mut params).await.unwrap();
    ServerParams::parse(&params).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_identity_gets_parameters_like_a_known_ones() {
    let srv = peers_server(None).await;
    let known = probe(&srv, "a").await;
    let unknown = probe(&srv, "zed").await;
    // The same costs, epoch and shape; a salt of its own that stays the same on every try
    // (a salt that changed would give it away), and differs between identities.
    assert_eq!(
        (unknown.kdf, unknown.epoch, unknown.other_epoch),
        (known.kdf, 1, 0)
    );
    assert_ne!(unknown.salt, known.salt);
    assert_eq!(probe(&srv, "zed").await.salt, unknown.salt);
    assert_ne!(probe(&srv, "zed2").await.salt, unknown.salt);
    assert_eq!(probe(&srv, "a").await.salt, known.salt);
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_identity_ends_its_connections_and_refuses_it() {
    let srv = peers_server(Some(b"shared")).await;
    let a = dial(&srv, "a", b"pw-a").await.unwrap();
    let b = dial(&srv, "b", b"pw-b").await.unwrap();
    for _ in 0..2 {
        srv.accept().await.unwrap();
    }
    assert_eq!(srv.revoke(&id("a")), 1);
    match tokio::time::timeout(Duration::from_secs(5), a.recv())
        .await
        .unwrap()
    {
        Err(Error::Closed(info)) => assert_eq!(info.code, CloseCode::REVOKED),
        other => panic!("{other:?}"),
    }
    assert!(b.outcome().is_none(), "another identity is untouched");
    // Refused from then on, with its own password and with the shared one.
    for pw in [&b"pw-a"[..], b"shared"] {
        let err = dial(&srv, "a", pw).await.unwrap_err();
        assert!(matches!(err, Error::Authentication(_)), "{err}");
    }
    assert_eq!(srv.key_epoch_of(&id("a")), 0);
    // A new password admits it again.
    srv.set_password(source(b"pw-a2"), Duration::ZERO, Some(id("a")))
        .await
        .unwrap();
    dial(&srv, "a", b"pw-a2").await.unwrap();
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_one_identity_leaves_the_others_connected() {
    let srv = peers_server(None).await;
    let a = dial(&srv, "a", b"pw-a").await.unwrap();
    let b = dial(&srv, "b", b"pw-b").await.unwrap();
    for _ in 0..2 {
        srv.accept().await.unwrap();
    }
    let epoch = srv
        .set_password(source(b"pw-a2"), Duration::ZERO, Some(id("a")))
        .await
        .unwrap();
    assert_eq!(
        (
            epoch,
            srv.key_epoch_of(&id("a")),
            srv.key_epoch_of(&id("b"))
        ),
        (2, 2, 1)
    );
    match tokio::time::timeout(Duration::from_secs(5), a.recv())
        .await
        .unwrap()
    {
        Err(Error::Closed(info)) => assert_eq!(info.code, CloseCode::REAUTHENTICATE),
        other => panic!("{other:?}"),
    }
    assert!(b.outcome().is_none());
    assert!(dial(&srv, "a", b"pw-a").await.is_err());
    dial(&srv, "a", b"pw-a2").await.unwrap();
    srv.close().await;
}

/// M27: a session belongs to the identity that opened it: another identity that learned its
/// id can neither resume it nor take the id over with a new session. (Under a shared password
/// that is a weak bound: any holder of it may name the opener's identity.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_identity_that_opened_a_session_resumes_it() {
    let srv = peers_server(Some(b"shared")).await;
    let port = srv.local_addr().port();
    let request = |resume| SessionRequest {
        session_id: [7; 16],
        resume,
        next_expected: 0,
        window: 1 << 20,
    };
    let config = client_config();
    let creds = |who: &str| Arc::new(Credentials::with_identity(id(who), b"shared"));
    let (opener, mallory) = (creds("c"), creds("m"));
    let (first, reply) = client::dial("127.0.0.1", port, &opener, &config, 0, Some(request(false)))
        .await
        .unwrap();
    assert_eq!(reply.unwrap().status, ResumeStatus::Created);
    let _server_end = srv.accept().await.unwrap();
    first.abort("cut");
    // Another identity naming the same id is told the session is unknown.
    match client::dial("127.0.0.1", port, &mallory, &config, 0, Some(request(true))).await {
        Ok((_, reply)) => assert_eq!(reply.unwrap().status, ResumeStatus::Unknown),
        Err(failure) => match failure.error {
            Error::Closed(info) => assert_eq!(info.code, CloseCode::SESSION_LOST, "{info}"),
            other => panic!("{other:?}"),
        },
    }
    // Nor open a "new" session under that id: refused the same way, the session untouched.
    match client::dial(
        "127.0.0.1",
        port,
        &mallory,
        &config,
        0,
        Some(request(false)),
    )
    .await
    {
        Ok((_, reply)) => assert_eq!(reply.unwrap().status, ResumeStatus::Unknown),
        Err(failure) => match failure.error {
            Error::Closed(info) => assert_eq!(info.code, CloseCode::SESSION_LOST, "{info}"),
            other => panic!("{other:?}"),
        },
    }
    // The session is still there for its own client.
    let (_, reply) = client::dial("127.0.0.1", port, &opener, &config, 0, Some(request(true)))
        .await
        .unwrap();
    assert_eq!(reply.unwrap().status, ResumeStatus::Resumed);
    srv.close().await;
}

/// Many handshakes naming one identity at once ask the application's lookup once, and keep
/// its answer; an identity it does not know is not asked about again right away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_is_asked_once_however_many_handshakes_wait_for_it() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let lookup: crate::net::server::PeerLookup = Arc::new(move |who: &Identity| {
        counted.fetch_add(1, SeqCst);
        std::thread::sleep(Duration::from_millis(50)); // a slow directory
        Ok((who.as_str() == "a").then(|| source(b"pw-a")))
    });
    let secrets = ServerSecrets {
        lookup: Some(lookup),
        ..ServerSecrets::default()
    };
    let srv = Server::bind("127.0.0.1", 0, secrets, ServerConfig::default())
        .await
        .unwrap();
    let dials = futures_util::future::join_all((0..10).map(|_| dial(&srv, "a", b"pw-a"))).await;
    assert!(dials.iter().all(|d| d.is_ok()));
    assert_eq!(calls.load(SeqCst), 1);
    for _ in 0..3 {
        assert!(dial(&srv, "b", b"pw-a").await.is_err());
    }
    assert_eq!(calls.load(SeqCst), 2, "b asked about once");
    assert_eq!(stat(&srv.stats().key_derivations), 1);
    srv.close().await;
}
