//! The lingering close after a connection's last answer (RFC 9112 9.6), one rule for the
//! host (its rejections, 413 and 408 on connections it keeps) and the plugins (their
//! refusals on connections they own): what the client still sends is read and dropped,
//! within [`LINGER`] and [`LINGER_MAX_BYTES`], because a close with unread bytes resets the
//! connection, and the client could lose the answer before reading it.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// How long what the client still sends is read. A client whose body is refused is often
/// still sending it; its kernel buffers hold a few hundred KiB, which [`LINGER_MAX_BYTES`]
/// covers, while the two bound what a client that keeps sending can cost.
pub const LINGER: Duration = Duration::from_secs(1);
/// How much of what the client still sends is read.
pub const LINGER_MAX_BYTES: usize = 1024 * 1024;
/// One read: a piece of a body in flight, on the heap so that the future stays small.
const PIECE: usize = 16 * 1024;

/// Reads and drops what `client` sends (after the answer and the end of the writing
/// side), up to [`LINGER_MAX_BYTES`] within [`LINGER`]; ends sooner at its end or an
/// error. Returns how many bytes it dropped.
pub async fn discard(client: &mut (impl AsyncRead + Unpin + ?Sized)) -> usize {
    let mut piece = vec![0u8; PIECE];
    let mut dropped = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while dropped < LINGER_MAX_BYTES {
            match client.read(&mut piece).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    })
    .await;
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn it_reads_to_the_end_of_what_is_sent() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&[b'x'; 5000]).await.unwrap();
        drop(client);
        assert_eq!(discard(&mut server).await, 5000);
    }

    #[tokio::test]
    async fn a_client_that_keeps_sending_is_cut_after_the_byte_bound() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let sending = tokio::spawn(async move {
            let piece = [b'x'; 4096];
            while client.write_all(&piece).await.is_ok() {}
        });
        let dropped = discard(&mut server).await;
        assert!(
            (LINGER_MAX_BYTES..LINGER_MAX_BYTES + PIECE).contains(&dropped),
            "{dropped}"
        );
        drop(server);
        sending.await.unwrap();
    }
}
