//! A handshake's socket: reads exactly what the handshake state machine wants (so nothing of
//! the connection's is read early, and a peer can make us buffer at most one record), writes
//! what it says, and becomes the connection's socket when it is done.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::connection::Socket;
use crate::core::record::{Opener, Sealer};

pub(crate) struct Wire {
    pub rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    /// Read and not yet taken by the handshake. Bounded by what the handshake `wants`: at
    /// most one record (2 + 65,535 B), whatever the peer sends.
    pub buf: BytesMut,
}

impl Wire {
    pub fn new(stream: TcpStream) -> std::io::Result<Wire> {
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        Ok(Wire {
            rd,
            wr,
            buf: BytesMut::new(),
        })
    }

    /// Read exactly `n` more bytes into the buffer (`UnexpectedEof` if the stream ends first).
    pub async fn read(&mut self, n: usize) -> std::io::Result<()> {
        let start = self.buf.len();
        self.buf.resize(start + n, 0);
        let read = self.rd.read_exact(&mut self.buf[start..]).await;
        if read.is_err() {
            self.buf.truncate(start);
        }
        read.map(|_| ())
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.wr.write_all(bytes).await
    }

    /// After a failure: what the handshake still has to say (a CLOSE), then FIN.
    pub async fn last_words(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() && self.wr.write_all(bytes).await.is_ok() {
            let _ = self.wr.shutdown().await;
        }
    }

    /// The connection's socket, with the record layer where the handshake left it.
    pub fn into_socket(self, opener: Opener, sealer: Sealer) -> Socket {
        debug_assert!(self.buf.is_empty(), "the handshake read only its own bytes");
        Socket {
            rd: self.rd,
            wr: self.wr,
            opener,
            sealer,
        }
    }
}
