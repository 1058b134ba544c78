//! The server: bad passwords, half-open and pending handshakes, capacity, password changes.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_and_server_keeps_serving() {
    let srv = server(b"pw").await;
    let port = srv.local_addr().port();
    let wrong = Arc::new(Credentials::new(b"not it"));
    let err = connect("127.0.0.1", port, &wrong, &client_config(), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Authentication(_)), "{err}");
    let (client, accepted) = pair(&srv).await;
    client.send(Bytes::from_static(b"ok")).await.unwrap();
    assert_eq!(
        accepted.recv().await.unwrap().into_bytes(),
        Bytes::from_static(b"ok")
    );
    assert!(
        srv.try_accept().unwrap().is_none(),
        "the failed handshake never reached accept"
    );
    assert_eq!(
        srv.stats()
            .auth_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_half_open_handshake_is_cut_at_the_deadline() {
    let source = ServerKeySource::Password(b"pw".to_vec().into(), FAST);
    let config = ServerConfig {
        handshake_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let srv = Server::bind("127.0.0.1", 0, source, config).await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(srv.local_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "server closed the idle handshake"
    );
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_handshakes_are_capped_oldest_first() {
    let source = ServerKeySource::Password(b"pw".to_vec().into(), FAST);
    let config = ServerConfig {
        max_pending_handshakes: 4,
        ..Default::default()
    };
    let srv = Server::bind("127.0.0.1", 0, source, config).await.unwrap();
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(srv.local_addr())
            .await
            .unwrap();
        s.write_all(b"AL").await.unwrap();
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(srv.pending_handshakes() <= 4);
    let (client, accepted) = pair(&srv).await;
    client.send(Bytes::from_static(b"through")).await.unwrap();
    assert_eq!(
        accepted.recv().await.unwrap().into_bytes(),
        Bytes::from_static(b"through")
    );
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_close_closes_live_connections_cleanly() {
    let srv = server(b"pw").await;
    let (client, _accepted) = pair(&srv).await;
    srv.close().await;
    match client.recv().await {
        Err(Error::Closed(info)) => {
            assert!(info.clean && info.code == CloseCode::GOING_AWAY, "{info:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(srv.accept().await, Err(Error::Closed(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_closes_old_sessions_and_grace_accepts_both() {
    let srv = server(b"old").await;
    let port = srv.local_addr().port();
    let old = Arc::new(Credentials::new(b"old"));
    let new = Arc::new(Credentials::new(b"new"));
    let before = connect("127.0.0.1", port, &old, &client_config(), 0)
        .await
        .unwrap();
    srv.accept().await.unwrap();

    let source = ServerKeySource::Password(b"new".to_vec().into(), FAST);
    assert_eq!(
        srv.set_password(source, Duration::from_millis(300), None)
            .await
            .unwrap(),
        2
    );
    // Within the grace window: both passwords work, each under its own epoch.
    let hinted = connect("127.0.0.1", port, &old, &client_config(), 1)
        .await
        .unwrap();
    assert_eq!(hinted.key_epoch(), 1);
    let unhinted = connect("127.0.0.1", port, &old, &client_config(), 0)
        .await
        .unwrap();
    assert_eq!(unhinted.key_epoch(), 1, "retried under the other epoch");
    let fresh = connect("127.0.0.1", port, &new, &client_config(), 0)
        .await
        .unwrap();
    assert_eq!(fresh.key_epoch(), 2);
    assert!(
        before.outcome().is_none(),
        "still open during the grace window"
    );

    // After it: old sessions are told to re-authenticate; the old password is refused.
    match tokio::time::timeout(Duration::from_secs(5), before.recv())
        .await
        .unwrap()
    {
        Err(Error::Closed(info)) => assert_eq!(info.code, CloseCode::REAUTHENTICATE),
        other => panic!("{other:?}"),
    }
    assert!(fresh.outcome().is_none());
    let refused = connect("127.0.0.1", port, &old, &client_config(), 1)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Authentication(_)), "{refused}");
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_confirms_gives_its_slot_back() {
    use crate::core::handshake::{
        ClientAwaitingReply, ClientHello, NodeId, ServerParams, PARAMS_LEN,
    };
    use crate::core::kdf::derive_prs;
    let source = ServerKeySource::Password(b"pw".to_vec().into(), FAST);
    let config = ServerConfig {
        handshake_timeout: Duration::from_millis(200),
        max_connections: Some(1),
        ..ServerConfig::default()
    };
    let srv = Server::bind("127.0.0.1", 0, source, config).await.unwrap();
    // Authenticate up to message 2, then go silent instead of sending CONFIRM.
    let mut s = tokio::net::TcpStream::connect(srv.local_addr())
        .await
        .unwrap();
    let hello = ClientHello::new(0, Default::default()).encode();
    s.write_all(&hello).await.unwrap();
    let mut params = [0u8; PARAMS_LEN];
    s.read_exact(&mut params).await.unwrap();
    let p = ServerParams::parse(&params).unwrap();
    let prs = derive_prs(b"pw", &p.salt, &p.kdf).unwrap();
    let (_, msg1) = ClientAwaitingReply::start(
        &prs,
        &hello,
        &params,
        NodeId::random(),
        crate::net::LinkConfig::default().limits(),
    )
    .unwrap();
    s.write_all(&(msg1.len() as u16).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&msg1).await.unwrap();
    let mut reply = [0u8; 59];
    s.read_exact(&mut reply).await.unwrap();
    // After the deadline the slot is free again: a real client gets in.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (client, accepted) = pair(&srv).await;
    client.send(Bytes::from_static(b"in")).await.unwrap();
    assert_eq!(
        accepted.recv().await.unwrap().into_bytes(),
        Bytes::from_static(b"in")
    );
    srv.close().await;
}

/// Sessions alive on a server are bounded (each may hold buffers while it lingers): a new one
/// beyond `max_sessions` is refused with CLOSE 1013, which the client reports as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_max_sessions_are_refused_as_busy() {
    let source = ServerKeySource::Password(b"pw".to_vec().into(), FAST);
    let config = ServerConfig {
        max_sessions: 1,
        ..ServerConfig::default()
    };
    let srv = Server::bind("127.0.0.1", 0, source, config).await.unwrap();
    let port = srv.local_addr().port();
    let creds = Arc::new(Credentials::new(b"pw"));
    let request = |id| SessionRequest {
        session_id: [id; 16],
        resume: false,
        next_expected: 0,
        window: 1 << 20,
    };
    let config = client_config();
    let dial = |id| client::dial("127.0.0.1", port, &creds, &config, 0, Some(request(id)));
    let (first, reply) = dial(1).await.unwrap();
    assert_eq!(reply.unwrap().status, ResumeStatus::Created);
    let _server_end = srv.accept().await.unwrap();
    match dial(2).await.map(|_| ()).unwrap_err().error {
        Error::Closed(info) => assert_eq!(info.code, CloseCode::BUSY, "{info}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(srv.sessions(), 1);
    assert!(!first.is_finished());
    srv.close().await;
}
