//! The loopback ceiling for the benchmarks: plain TCP between two tokio processes, no crypto,
//! no Python. `benchmarks/` starts it as two processes (a server and a client) and compares
//! argonlink against what the machine can do at all.
//!
//! ```text
//! tcp_ceiling server                      prints its port, serves one connection, exits
//! tcp_ceiling client PORT MODE COUNT SIZE prints {"elapsed": seconds} on success
//! ```
//! The client sends a header (mode byte, u64 count, u32 size, big-endian), then:
//! * `bulk` (B): COUNT messages of SIZE bytes; the server reads all of it and answers one byte.
//! * `pipelined` (P): the same with small messages, written through a buffer as fast as possible.
//! * `rtt` (R): COUNT round trips of SIZE bytes; the server echoes each message.
//!
//! Timing is the client's, from the first byte of payload to the last acknowledgement or echo.
//! A `harness = false` bench target (not a Rust test): `cargo build --release --bench
//! tcp_ceiling`.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const ACK: u8 = 6;

async fn server() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    let (mut sock, _) = listener.accept().await?;
    sock.set_nodelay(true)?;
    let mut header = [0u8; 13];
    sock.read_exact(&mut header).await?;
    let count = u64::from_be_bytes(header[1..9].try_into()?);
    let size = u32::from_be_bytes(header[9..13].try_into()?) as usize;
    match header[0] {
        b'B' | b'P' => {
            let mut left = count * size as u64;
            let mut buf = vec![0u8; (1 << 20).max(size)];
            while left > 0 {
                let want = buf.len().min(left as usize);
                let n = sock.read(&mut buf[..want]).await?;
                if n == 0 {
                    return Err("end of stream before the last message".into());
                }
                left -= n as u64;
            }
            sock.write_all(&[ACK]).await?;
        }
        b'R' => {
            let mut buf = vec![0u8; size];
            for _ in 0..count {
                sock.read_exact(&mut buf).await?;
                sock.write_all(&buf).await?;
            }
        }
        other => return Err(format!("unknown mode {other}").into()),
    }
    // Wait for the client's end of stream, so that neither side resets the connection.
    let mut rest = [0u8; 1];
    let _ = sock.read(&mut rest).await?;
    Ok(())
}

async fn client(port: u16, mode: &str, count: u64, size: usize) -> Result<()> {
    let mode = match mode {
        "bulk" => b'B',
        "pipelined" => b'P',
        "rtt" => b'R',
        other => return Err(format!("unknown mode {other}").into()),
    };
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await?;
    sock.set_nodelay(true)?;
    let mut header = vec![mode];
    header.extend_from_slice(&count.to_be_bytes());
    header.extend_from_slice(&(size as u32).to_be_bytes());
    sock.write_all(&header).await?;
    let payload = vec![0x5au8; size];
    let mut echo = vec![0u8; size];
    let mut ack = [0u8; 1];
    let start = Instant::now();
    match mode {
        b'B' => {
            for _ in 0..count {
                sock.write_all(&payload).await?;
            }
            sock.read_exact(&mut ack).await?;
        }
        b'P' => {
            let (mut rd, wr) = sock.split();
            let mut wr = BufWriter::with_capacity(256 * 1024, wr);
            for _ in 0..count {
                wr.write_all(&payload).await?;
            }
            wr.flush().await?;
            rd.read_exact(&mut ack).await?;
        }
        _ => {
            for _ in 0..count {
                sock.write_all(&payload).await?;
                sock.read_exact(&mut echo).await?;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if mode != b'R' && ack[0] != ACK {
        return Err("bad acknowledgement".into());
    }
    sock.shutdown().await?;
    println!("{{\"elapsed\": {elapsed}}}");
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["server"] => rt.block_on(server()),
        ["client", port, mode, count, size] => {
            rt.block_on(client(port.parse()?, mode, count.parse()?, size.parse()?))
        }
        _ => Err("usage: tcp_ceiling server | client PORT bulk|pipelined|rtt COUNT SIZE".into()),
    }
}
