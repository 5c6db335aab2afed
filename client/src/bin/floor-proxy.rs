//! `floor-proxy --listen 127.0.0.1:0 --to 127.0.0.1:9601`: the benchmark's floor, the cost of
//! the extra hop itself. It accepts a connection, connects to the origin and copies bytes both
//! ways (`tokio::io::copy_bidirectional`, TCP_NODELAY on both sockets), parsing nothing: what a
//! real proxy spends above it is the proxy's own work, not the hop's.
//!
//! One thread per process, and the listener sets SO_REUSEPORT so that several processes can
//! share one port: the benchmark starts one per core, as nginx runs one worker per core, since
//! proxying 10,000 clients takes 20,000 descriptors, more than one process may hold under the
//! build machine's hard limit.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tokio::net::{TcpSocket, TcpStream};

#[derive(Parser)]
#[command(
    name = "floor-proxy",
    about = "Byte-copying TCP proxy: the benchmark's floor"
)]
struct Args {
    /// Address to listen on (port 0 picks one; it is printed).
    #[arg(long)]
    listen: SocketAddr,
    /// The origin every connection is copied to.
    #[arg(long)]
    to: SocketAddr,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let socket = match args.listen {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseport(true)?;
    socket.bind(args.listen)?;
    let listener = socket.listen(1024)?;
    println!("Listening on {}", listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(relay(client, args.to));
            }
            // Out of descriptors, most likely: the clients waiting in the backlog are served
            // once some leave; a pause keeps the loop from spinning meanwhile.
            Err(error) => {
                eprintln!("floor-proxy: accept: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn relay(mut client: TcpStream, origin: SocketAddr) {
    let mut upstream = match TcpStream::connect(origin).await {
        Ok(upstream) => upstream,
        Err(error) => {
            eprintln!("floor-proxy: connecting to {origin}: {error}");
            return;
        }
    };
    if let Err(error) = client.set_nodelay(true).and(upstream.set_nodelay(true)) {
        eprintln!("floor-proxy: TCP_NODELAY: {error}");
        return;
    }
    // Either side leaving ends the copy, with an error when it reset: nothing to report.
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
