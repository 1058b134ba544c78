//! Channels over real sockets: a stalled reader holds its window while another channel moves
//! on, the default channel keeps working beside them, half-close and reset reach the other
//! side, a dropped handle finishes its channel (and resets it if the peer sends on), and a
//! connection's end ends its channels.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_channel_holds_its_window_and_the_others_move_on() {
    let srv = server(b"pw").await;
    let (client, accepted) = pair(&srv).await;
    let slow = client.open_channel("slow").await.unwrap();
    let fast = client.open_channel("fast").await.unwrap();
    let (slow_in, fast_in) = (
        accepted.accept_channel("").await.unwrap(),
        accepted.accept_channel("").await.unwrap(),
    );
    assert_eq!((slow_in.name(), fast_in.name()), ("slow", "fast"));
    // The slow channel's reader never reads: its sender fills the window, then waits.
    let chunk = Bytes::from(vec![1u8; 64 << 10]);
    let stuffing = tokio::spawn({
        let slow = slow.clone();
        let chunk = chunk.clone();
        async move {
            for _ in 0..1024 {
                if slow.send(chunk.clone()).await.is_err() {
                    return;
                }
            }
        }
    });
    // 64 MiB through the fast channel, and the default channel beside it.
    let total = 64 << 20;
    let sender = tokio::spawn({
        let fast = fast.clone();
        async move {
            let mut sent = 0;
            while sent < total {
                fast.send(Bytes::from(vec![2u8; 1 << 20])).await.unwrap();
                sent += 1 << 20;
            }
            fast.finish().unwrap();
        }
    });
    client.send(Bytes::from_static(b"default")).await.unwrap();
    let mut got = 0;
    loop {
        match fast_in.recv().await {
            Ok(m) => got += m.len(),
            Err(Error::ChannelFinished) => break,
            Err(e) => panic!("{e}"),
        }
    }
    sender.await.unwrap();
    assert_eq!(got, total);
    assert_eq!(&accepted.recv().await.unwrap().into_bytes()[..], b"default");
    // What the slow channel holds unread is its window (256 KiB), whatever was sent.
    let held: usize = slow_in.queued() * (64 << 10);
    assert!(held <= 256 << 10, "{held}");
    assert!(!stuffing.is_finished(), "the slow sender waits for credit");
    slow_in.reset(0, "").unwrap();
    tokio::time::timeout(Duration::from_secs(5), stuffing)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        slow.send(chunk).await,
        Err(Error::ChannelReset { by_peer: true, .. })
    ));
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_both_ways_frees_the_channel() {
    let srv = server(b"pw").await;
    let (client, accepted) = pair(&srv).await;
    let ch = client.open_channel("q").await.unwrap();
    ch.send(Bytes::from_static(b"question")).await.unwrap();
    ch.finish().unwrap();
    assert!(matches!(
        ch.send(Bytes::from_static(b"more")).await,
        Err(Error::ChannelClosed)
    ));
    let other = accepted.accept_channel("").await.unwrap();
    assert_eq!(&other.recv().await.unwrap().into_bytes()[..], b"question");
    assert!(matches!(other.recv().await, Err(Error::ChannelFinished)));
    // The other side still sends on it: the answer arrives after our FIN.
    other.send(Bytes::from_static(b"answer")).await.unwrap();
    other.finish().unwrap();
    assert_eq!(&ch.recv().await.unwrap().into_bytes()[..], b"answer");
    assert!(matches!(ch.recv().await, Err(Error::ChannelFinished)));
    until("freed on both sides", || {
        client.open_channels() == 0 && accepted.open_channels() == 0
    })
    .await;
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_handle_finishes_and_the_connection_end_ends_every_channel() {
    let srv = server(b"pw").await;
    let (client, accepted) = pair(&srv).await;
    let kept = client.open_channel("kept").await.unwrap();
    let dropped = client.open_channel("dropped").await.unwrap();
    dropped
        .send(Bytes::from_static(b"last words"))
        .await
        .unwrap();
    drop(dropped);
    let (kept_in, dropped_in) = (
        accepted.accept_channel("").await.unwrap(),
        accepted.accept_channel("").await.unwrap(),
    );
    // What it sent arrives, then its end; what the other side sends on resets it.
    assert_eq!(
        &dropped_in.recv().await.unwrap().into_bytes()[..],
        b"last words"
    );
    assert!(matches!(
        dropped_in.recv().await,
        Err(Error::ChannelFinished)
    ));
    dropped_in
        .send(Bytes::from_static(b"anyone?"))
        .await
        .unwrap();
    let reset = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match dropped_in.send(Bytes::from_static(b"x")).await {
                Ok(()) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => return e,
            }
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(
            reset,
            Error::ChannelReset {
                code: 0,
                by_peer: true,
                ..
            }
        ),
        "{reset:?}"
    );
    client.close(CloseCode::NORMAL, "bye").await;
    assert!(matches!(kept_in.recv().await, Err(Error::Closed(_))));
    assert!(matches!(kept.recv().await, Err(Error::Closed(_))));
    assert!(matches!(
        accepted.accept_channel("").await,
        Err(Error::Closed(_))
    ));
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_channels_on_one_connection() {
    let config = ServerConfig {
        link: LinkConfig {
            max_channels: 1024,
            ..LinkConfig::default()
        },
        ..ServerConfig::default()
    };
    let source = ServerKeySource::Password(b"pw".to_vec().into(), FAST);
    let srv = Server::bind("127.0.0.1", 0, source, config).await.unwrap();
    let (client, accepted) = pair(&srv).await;
    let mut opened = Vec::new();
    for i in 0..1000u32 {
        let ch = client.open_channel(&i.to_string()).await.unwrap();
        ch.send(Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
        opened.push(ch);
    }
    for i in 0..1000u32 {
        let ch = accepted.accept_channel("").await.unwrap();
        assert_eq!(ch.name(), i.to_string());
        let m = ch.recv().await.unwrap().into_bytes();
        assert_eq!(&m[..], &i.to_be_bytes());
        ch.send(m).await.unwrap();
    }
    for (i, ch) in opened.iter().enumerate() {
        assert_eq!(
            &ch.recv().await.unwrap().into_bytes()[..],
            &(i as u32).to_be_bytes()
        );
    }
    assert_eq!(client.open_channels(), 1000);
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_opened_and_reset_before_anyone_accepted_them_leave_no_trace() {
    let srv = server(b"pw").await;
    let (client, accepted) = pair(&srv).await;
    for _ in 0..500 {
        let ch = client.open_channel("brief").await.unwrap();
        ch.send(Bytes::from_static(b"x")).await.unwrap();
        ch.reset(0, "").unwrap();
    }
    until("every reset answered", || client.open_channels() == 0).await;
    until("freed on the server", || accepted.open_channels() == 0).await;
    assert!(accepted.try_accept_channel("").unwrap().is_none());
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_names_wait_only_where_this_side_listens() {
    let srv = server(b"pw").await;
    let (client, accepted) = pair(&srv).await;
    // Nobody listens for this name: reset at once, and no queue holds it.
    let stray = client.open_channel("argonlink.nobody").await.unwrap();
    let reset = stray.recv().await;
    assert!(
        matches!(reset, Err(Error::ChannelReset { by_peer: true, .. })),
        "{reset:?}"
    );
    until("freed on the server", || accepted.open_channels() == 0).await;
    assert!(accepted.try_accept_channel("").unwrap().is_none());
    assert!(matches!(
        accepted.try_accept_channel("argonlink.nobody"),
        Err(Error::Config(_))
    ));
    // Listened for: it waits in its own queue, not in the application's.
    accepted.listen("argonlink.dir/7").unwrap();
    let lane = client.open_channel("argonlink.dir/7").await.unwrap();
    lane.send(Bytes::from_static(b"x")).await.unwrap();
    let got = accepted.accept_channel("argonlink.dir/7").await.unwrap();
    assert_eq!(&got.recv().await.unwrap().into_bytes()[..], b"x");
    assert!(accepted.try_accept_channel("").unwrap().is_none());
    // Unlistened: what still waits is reset, and so is what comes later.
    let waiting = client.open_channel("argonlink.dir/7").await.unwrap();
    until("queued", || accepted.open_channels() == 2).await;
    accepted.unlisten("argonlink.dir/7");
    for ch in [
        &waiting,
        &client.open_channel("argonlink.dir/7").await.unwrap(),
    ] {
        let end = ch.recv().await;
        assert!(matches!(end, Err(Error::ChannelReset { .. })), "{end:?}");
    }
    assert!(accepted.listen("not.reserved").is_err());
    srv.close().await;
}
