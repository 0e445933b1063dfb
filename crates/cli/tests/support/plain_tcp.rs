//! The reference for the shaped-link blob test: a plain TCP bulk copy (std sockets, no libp2p,
//! no encryption, no multiplexing) across the same link in the same run, so the blob rate can be
//! judged against what one TCP flow gets from the link emulation itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::nfqueue_delay::enter_netns;

/// Bytes per write and per read.
const BUFFER_BYTES: usize = 1 << 20;

/// Sends `bytes` from a listener at `listen` in namespace `sender_ns` to a client in
/// `receiver_ns`, and returns the receiver's rate in Mbit/s, timed from the start of the
/// connect (handshake and slow start included, as in a blob fetch) to the last byte.
pub fn bulk_copy_mbit(sender_ns: &str, listen: SocketAddr, receiver_ns: &str, bytes: u64) -> f64 {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sender_ns = sender_ns.to_owned();
    let sender = std::thread::spawn(move || {
        enter_netns(&sender_ns).unwrap();
        let listener = TcpListener::bind(listen).unwrap();
        ready_tx.send(()).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        let buffer = vec![0x5au8; BUFFER_BYTES];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(BUFFER_BYTES as u64) as usize;
            stream.write_all(&buffer[..n]).unwrap();
            left -= n as u64;
        }
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        // Wait for the receiver to close, so the last bytes are not cut off by a reset.
        let _ = stream.read(&mut [0u8; 1]);
    });
    ready_rx.recv().unwrap();
    let receiver_ns = receiver_ns.to_owned();
    let receiver = std::thread::spawn(move || {
        enter_netns(&receiver_ns).unwrap();
        let started = Instant::now();
        let mut stream = TcpStream::connect_timeout(&listen, Duration::from_secs(5)).unwrap();
        let mut buffer = vec![0u8; BUFFER_BYTES];
        let mut received = 0u64;
        loop {
            match stream.read(&mut buffer).unwrap() {
                0 => break,
                n => received += n as u64,
            }
        }
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(received, bytes, "plain TCP copy cut short");
        received as f64 * 8.0 / secs / 1e6
    });
    let mbit = receiver.join().expect("receiver thread");
    sender.join().expect("sender thread");
    mbit
}
