//! Links that redial, and the wake-ups they pass through to their connections.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_reconnects_to_a_restarted_server_and_keeps_receiving() {
    let srv = server(b"pw").await;
    let port = srv.local_addr().port();
    let creds = Arc::new(Credentials::new(b"pw"));
    let link = Link::open(
        "127.0.0.1",
        port,
        creds.clone(),
        client_config(),
        policy(),
        None,
    )
    .await
    .unwrap();
    let first = srv.accept().await.unwrap().connection();
    first.send(Bytes::from_static(b"one")).await.unwrap();
    assert_eq!(
        link.recv().await.unwrap().into_bytes(),
        Bytes::from_static(b"one")
    );
    srv.close().await; // GOING_AWAY: the link redials
    let source = ServerKeySource::Password(b"pw".to_vec().into(), FAST);
    let srv2 = Server::bind("127.0.0.1", port, source, ServerConfig::default())
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), srv2.accept())
        .await
        .unwrap()
        .unwrap()
        .connection();
    second.send(Bytes::from_static(b"two")).await.unwrap();
    assert_eq!(
        link.recv().await.unwrap().into_bytes(),
        Bytes::from_static(b"two")
    );
    link.send(Bytes::from_static(b"back")).await.unwrap();
    assert_eq!(
        second.recv().await.unwrap().into_bytes(),
        Bytes::from_static(b"back")
    );
    assert_eq!(link.reconnects(), 1);
    // A new server salt means one more derivation, not one per dial.
    assert_eq!(creds.derivations(), 2);
    link.close(CloseCode::NORMAL, "").await;
    srv2.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_drains_every_connection_in_order() {
    let srv = server(b"pw").await;
    let port = srv.local_addr().port();
    let creds = Arc::new(Credentials::new(b"pw"));
    let link = Link::open("127.0.0.1", port, creds, client_config(), policy(), None)
        .await
        .unwrap();
    // Three connections come and go before the application reads anything.
    for word in [&b"a"[..], b"b", b"c"] {
        let conn = tokio::time::timeout(Duration::from_secs(5), srv.accept())
            .await
            .unwrap()
            .unwrap()
            .connection();
        conn.send(Bytes::copy_from_slice(word)).await.unwrap();
        if word != b"c" {
            conn.close(CloseCode::GOING_AWAY, "bye").await;
        }
    }
    for word in [&b"a"[..], b"b", b"c"] {
        let got = tokio::time::timeout(Duration::from_secs(5), link.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.into_bytes(), Bytes::copy_from_slice(word));
    }
    assert_eq!(link.reconnects(), 2);
    link.close(CloseCode::NORMAL, "").await;
    srv.close().await;
}

/// A wait on a link that its connection rings (a message came) leaves nothing registered with
/// the link: one wait per message does not pile registrations up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_waits_rung_by_the_connection_leave_nothing_behind() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let srv = server(b"pw").await;
    let port = srv.local_addr().port();
    let creds = Arc::new(Credentials::new(b"pw"));
    let link = Link::open("127.0.0.1", port, creds, client_config(), None, None)
        .await
        .unwrap();
    let accepted = srv.accept().await.unwrap().connection();
    let rung = Arc::new(AtomicUsize::new(0));
    let wakeup: Wakeup = {
        let rung = rung.clone();
        Arc::new(move || {
            rung.fetch_add(1, SeqCst);
        })
    };
    // (A ring may come early: the link's own change of state may ring the first wait.)
    for i in 0..50 {
        assert!(!link.arm(i as u64, wakeup.clone()), "nothing to read yet");
        accepted.send(Bytes::from_static(b"m")).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while rung.load(SeqCst) <= i {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("rung by the connection");
        tokio::time::timeout(Duration::from_secs(5), link.recv())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        left_registered(&wakeup).await,
        0,
        "registrations left behind"
    );
    link.close(CloseCode::NORMAL, "").await;
    srv.close().await;
}

/// The same for a wait for room on a link (`arm_writable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_wait_for_room_rung_by_the_connection_leaves_nothing_behind() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let srv = tiny_recv_buffer_server().await;
    let port = srv.local_addr().port();
    let creds = Arc::new(Credentials::new(b"pw"));
    let mut config = client_config();
    config.link.send_buffer = 64 << 10;
    let link = Link::open("127.0.0.1", port, creds, config, None, None)
        .await
        .unwrap();
    let accepted = srv.accept().await.unwrap().connection();
    let msg = Bytes::from(vec![7u8; STUCK_LEN]);
    let mut sent = 0;
    while let Ok(r) = tokio::time::timeout(Duration::from_millis(300), link.send(msg.clone())).await
    {
        r.unwrap();
        sent += 1;
    }
    let rung = Arc::new(AtomicBool::new(false));
    let wakeup: Wakeup = {
        let rung = rung.clone();
        Arc::new(move || rung.store(true, SeqCst))
    };
    assert!(
        !link.arm_writable(1, STUCK_LEN, wakeup.clone()).unwrap(),
        "no room yet"
    );
    for _ in 0..sent {
        accepted.recv().await.unwrap();
    }
    assert!(eventually(&rung).await, "rung by the connection");
    assert_eq!(
        left_registered(&wakeup).await,
        0,
        "a registration left behind"
    );
    link.close(CloseCode::NORMAL, "").await;
    srv.close().await;
}
