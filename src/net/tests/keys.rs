//! Key derivation: once per password and server key, kept off the event loop.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_derivation_for_many_handshakes() {
    let srv = server(b"pw").await;
    let creds = Arc::new(Credentials::new(b"pw"));
    let port = srv.local_addr().port();
    let config = client_config();
    let conns = futures_util::future::join_all(
        (0..10).map(|_| connect("127.0.0.1", port, &creds, &config, 0)),
    )
    .await;
    assert!(conns.iter().all(|c| c.is_ok()));
    assert_eq!(creds.derivations(), 1);
    assert_eq!(
        srv.stats()
            .key_derivations
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    srv.close().await;
}

#[test]
fn a_phc_key_source_holds_the_parsed_key_not_the_string() {
    let phc = crate::core::kdf::hash_password(b"pw", FAST).unwrap();
    let expected = crate::core::kdf::ServerKey::from_phc(&phc).unwrap();
    let source = ServerKeySource::from_phc(zeroize::Zeroizing::new(phc)).unwrap();
    // Nothing but the key: the string was wiped when the source was made.
    let ServerKeySource::Key(key) = &source else {
        panic!("a PHC string becomes a key at once");
    };
    assert_eq!(key.prs, expected.prs);
    let (key, derived) = source.into_key().unwrap();
    assert!(!derived);
    assert_eq!((key.salt, key.params), (expected.salt, expected.params));
    assert!(ServerKeySource::from_phc(zeroize::Zeroizing::new("not a hash".into())).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_credentials_with_one_password_share_one_derivation() {
    let salt = crate::core::kdf::random_salt();
    let all: Vec<Arc<Credentials>> = (0..20)
        .map(|_| Arc::new(Credentials::new(b"shared password")))
        .collect();
    let keys = futures_util::future::join_all(all.iter().map(|c| c.prs_for(salt, FAST))).await;
    let first = keys[0].as_ref().unwrap().clone();
    assert!(keys.iter().all(|k| k.as_ref().unwrap() == &first));
    assert_eq!(all.iter().map(|c| c.derivations()).sum::<u64>(), 1);
    // Another password under the same salt and costs is another entry.
    let other = Arc::new(Credentials::new(b"another password"));
    assert!(other.prs_for(salt, FAST).await.unwrap() != first);
    assert_eq!(other.derivations(), 1);
}

/// A first-time client whose handshake is cut while it derives its key (a server under a
/// connection flood drops it as idle) tries once more with the key it now has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_handshake_cut_during_derivation_is_tried_once_more() {
    // An anonymous client's hello is the fixed part alone.
    use crate::core::handshake::{HELLO_FIXED_LEN as HELLO_LEN, PARAMS_LEN};
    let srv = server(b"pw").await;
    let target = srv.local_addr();
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = front.local_addr().unwrap().port();
    let relay = tokio::spawn(async move {
        for attempt in 0.. {
            let (mut c, _) = front.accept().await.unwrap();
            let mut s = tokio::net::TcpStream::connect(target).await.unwrap();
            if attempt == 0 {
                // Pass the hello and the parameters, then hang up before message 1.
                let mut hello = [0u8; HELLO_LEN];
                c.read_exact(&mut hello).await.unwrap();
                s.write_all(&hello).await.unwrap();
                let mut params = [0u8; PARAMS_LEN];
                s.read_exact(&mut params).await.unwrap();
                c.write_all(&params).await.unwrap();
                drop(c);
                continue;
            }
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
            });
        }
    });
    let creds = Arc::new(Credentials::new(b"pw"));
    let conn = connect("127.0.0.1", port, &creds, &client_config(), 0)
        .await
        .expect("the second attempt, with the key derived, gets through");
    let accepted = match srv.accept().await.unwrap() {
        server::Accepted::Connection(c) => c,
        server::Accepted::Session(_) => panic!("no session asked for"),
    };
    conn.send(Bytes::from_static(b"in")).await.unwrap();
    assert_eq!(&accepted.recv().await.unwrap().into_bytes()[..], b"in");
    assert_eq!(creds.derivations(), 1);
    relay.abort();
    srv.close().await;
}

/// A server that offers new parameters on every dial (an impostor on the address) gets a
/// redialling client to run Argon2 once, then ever more rarely: not once per redial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_parameters_on_every_dial_are_derived_ever_more_rarely() {
    use crate::core::handshake::{ServerAwaitingMessage1, ServerParams, HELLO_FIXED_LEN};
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = fake.local_addr().unwrap().port();
    let impostor = tokio::spawn(async move {
        loop {
            let (mut c, _) = fake.accept().await.unwrap();
            let mut hello = [0u8; HELLO_FIXED_LEN];
            if c.read_exact(&mut hello).await.is_err() {
                continue;
            }
            let salt = crate::core::kdf::random_salt();
            let key = ServerParams::new(salt, FAST, 1, NodeId::random(), 0).encode();
            let prs = crate::core::kdf::Prs::from_bytes([7; 32]);
            let (_, params) = ServerAwaitingMessage1::offer(&prs, &hello, &key);
            let _ = c.write_all(&params).await;
            // Never answers message 1.
        }
    });
    let creds = Arc::new(Credentials::new(b"pw"));
    let config = ClientConfig {
        open_timeout: Duration::from_millis(300),
        ..client_config()
    };
    let start = std::time::Instant::now();
    let mut dials = 0;
    while start.elapsed() < Duration::from_millis(2500) {
        let _ = connect("127.0.0.1", port, &creds, &config, 0).await;
        dials += 1;
    }
    impostor.abort();
    // 0 s, then 1 s later, then 2 s after that: at most 3 in 2.5 s.
    assert!(
        creds.derivations() <= 3,
        "{} derivations",
        creds.derivations()
    );
    assert!(dials > 5, "{dials} dials");
}
