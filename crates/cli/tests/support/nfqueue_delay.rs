//! A fixed packet delay for the netns test on kernels without `sch_netem` (or `fq`/`etf`): an
//! iptables `NFQUEUE` rule parks each packet in the kernel, and this thread releases it (verdict
//! `NF_ACCEPT`) once it has waited `delay`. Only packet metadata crosses to userspace
//! (`NFQNL_COPY_META`); the packets themselves stay in the kernel's stack, in order.
//!
//! It is put on the *receiving* side's PREROUTING hook, after the sender's qdisc and the veth:
//! a packet held there is no longer charged to the sending socket, so TCP small queues behave as
//! with netem (which orphans the packets it holds) and not as with a slow local queue.
//!
//! The thread enters the namespace with `setns(CLONE_NEWNET)` (that changes the calling thread
//! only), so the netlink socket it opens belongs to that namespace.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
/// Hand over GSO packets whole (no segmentation just to show them to us).
const NFQA_CFG_F_GSO: u32 = 4;
const NF_ACCEPT: u32 = 1;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDR_BYTES: usize = 16;
const NFGENMSG_BYTES: usize = 4;
/// Packets the kernel parks for us before it drops new ones: far above the bandwidth-delay
/// product of the shaped link (100 Mbit/s x 50 ms = 625 KB, about 430 full-size packets).
const QUEUE_PACKETS_MAX: u32 = 16_384;
/// Socket receive buffer: packet notifications queued for this thread.
const RCVBUF_BYTES: libc::c_int = 16 << 20;
/// The thread wakes at least this often to notice that it should stop.
const POLL_MS_MAX: i32 = 20;

/// Delays every packet of NFQUEUE `queue` in namespace `ns` by `delay` until dropped.
pub struct NfqueueDelay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<DelayStats, String>>>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct DelayStats {
    pub packets: u64,
    pub verdict_batches: u64,
}

impl NfqueueDelay {
    /// Binds the queue and starts releasing packets; returns once the queue is bound, so the
    /// caller may then add the iptables rule that feeds it.
    pub fn start(ns: &str, queue: u16, delay: Duration) -> NfqueueDelay {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ns_name = ns.to_owned();
        let ns = ns.to_owned();
        let thread_stop = stop.clone();
        let thread = std::thread::spawn(move || {
            let socket = match enter_netns(&ns).and_then(|()| open_queue(queue)) {
                Ok(socket) => socket,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            let _ = ready_tx.send(Ok(()));
            run(&socket, queue, delay, &thread_stop)
        });
        ready_rx
            .recv()
            .expect("delay thread")
            .unwrap_or_else(|e| panic!("nfqueue {queue} in {ns_name}: {e}"));
        NfqueueDelay {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread and returns what it did (packets held and released).
    pub fn finish(mut self) -> DelayStats {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finish once");
        thread.join().expect("delay thread").expect("delay thread")
    }
}

impl Drop for NfqueueDelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The fastest of `tries` TCP handshakes (SYN to SYN-ACK: one round trip) from inside namespace
/// `ns` to `addr`, in ms. (This VM has no `ping`.)
pub fn tcp_connect_ms(ns: &str, addr: std::net::SocketAddr, tries: usize) -> f64 {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter_netns(&ns).unwrap();
        (0..tries)
            .map(|_| {
                let started = Instant::now();
                let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("connect to {addr} from {ns}: {e}"));
                let ms = started.elapsed().as_secs_f64() * 1e3;
                drop(stream);
                ms
            })
            .fold(f64::INFINITY, f64::min)
    })
    .join()
    .expect("connect thread")
}

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

pub fn enter_netns(ns: &str) -> Result<(), String> {
    let file = std::fs::File::open(format!("/var/run/netns/{ns}"))
        .map_err(|e| format!("open netns {ns}: {e}"))?;
    // SAFETY: a valid namespace fd; setns changes only this thread's network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(os_error("setns"));
    }
    Ok(())
}

fn open_queue(queue: u16) -> Result<OwnedFd, String> {
    // SAFETY: plain socket(2) call; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, NETLINK_NETFILTER) };
    if fd < 0 {
        return Err(os_error("netlink socket"));
    }
    // SAFETY: fd is a fresh socket that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: setsockopt with a c_int value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&RCVBUF_BYTES as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(os_error("SO_RCVBUFFORCE"));
    }
    // SAFETY: zeroed sockaddr_nl is valid; bind with its exact size.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let rc = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(os_error("bind netlink"));
    }
    let mut bind = vec![NFQNL_CFG_CMD_BIND, 0];
    bind.extend_from_slice(&(libc::AF_INET as u16).to_be_bytes());
    request(&socket, queue, NFQNL_MSG_CONFIG, &[(NFQA_CFG_CMD, &bind)])?;
    let mut params = 0u32.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_META);
    let maxlen = QUEUE_PACKETS_MAX.to_be_bytes();
    let flags = NFQA_CFG_F_GSO.to_be_bytes();
    request(
        &socket,
        queue,
        NFQNL_MSG_CONFIG,
        &[
            (NFQA_CFG_PARAMS, &params),
            (NFQA_CFG_QUEUE_MAXLEN, &maxlen),
            (NFQA_CFG_MASK, &flags),
            (NFQA_CFG_FLAGS, &flags),
        ],
    )?;
    Ok(socket)
}

/// A netfilter-queue netlink message: header, nfgenmsg (queue number), attributes.
fn message(queue: u16, msg_type: u16, flags: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = vec![0u8; NLMSG_HDR_BYTES];
    out.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    out.extend_from_slice(&queue.to_be_bytes());
    for (kind, value) in attrs {
        let len = 4 + value.len();
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    let total = out.len() as u32;
    out[0..4].copy_from_slice(&total.to_ne_bytes());
    out[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg_type).to_ne_bytes());
    out[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    out
}

fn send(socket: &OwnedFd, bytes: &[u8]) -> Result<(), String> {
    // SAFETY: sending an initialised buffer of its own length.
    let n = unsafe { libc::send(socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(os_error("netlink send"));
    }
    Ok(())
}

/// Sends a config request and checks the kernel's acknowledgement.
fn request(
    socket: &OwnedFd,
    queue: u16,
    msg_type: u16,
    attrs: &[(u16, &[u8])],
) -> Result<(), String> {
    send(socket, &message(queue, msg_type, NLM_F_ACK, attrs))?;
    let mut buf = vec![0u8; 8192];
    // SAFETY: receiving into an owned buffer of its own length.
    let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < (NLMSG_HDR_BYTES + 4) as isize {
        return Err(os_error("netlink ack"));
    }
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    let errno = i32::from_ne_bytes(buf[16..20].try_into().unwrap());
    if kind != NLMSG_ERROR || errno != 0 {
        return Err(format!(
            "nfqueue config refused: type {kind}, errno {}",
            -errno
        ));
    }
    Ok(())
}

fn run(
    socket: &OwnedFd,
    queue: u16,
    delay: Duration,
    stop: &AtomicBool,
) -> Result<DelayStats, String> {
    let mut held: VecDeque<(u32, Instant)> = VecDeque::new();
    let mut stats = DelayStats::default();
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        let wait_ms = held.front().map_or(POLL_MS_MAX, |(_, due)| {
            let left = due.saturating_duration_since(Instant::now());
            (left.as_micros().div_ceil(1000) as i32).min(POLL_MS_MAX)
        });
        let mut poll = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, wait_ms) };
        if ready > 0 {
            receive_all(socket, &mut buf, delay, &mut held, &mut stats)?;
        }
        release_due(socket, queue, &mut held, &mut stats)?;
    }
    // Let everything still parked through, so nothing is lost when the test tears down.
    if let Some(&(id, _)) = held.back() {
        verdict_batch(socket, queue, id)?;
    }
    Ok(stats)
}

/// Reads every pending packet notification and parks its id with its release time.
fn receive_all(
    socket: &OwnedFd,
    buf: &mut [u8],
    delay: Duration,
    held: &mut VecDeque<(u32, Instant)>,
    stats: &mut DelayStats,
) -> Result<(), String> {
    loop {
        // SAFETY: receiving into an owned buffer of its own length.
        let n = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) => Ok(()),
                // The kernel dropped notifications (and so their packets): TCP will resend.
                Some(libc::ENOBUFS) => Ok(()),
                _ => Err(format!("netlink recv: {err}")),
            };
        }
        let due = Instant::now() + delay;
        for id in packet_ids(&buf[..n as usize]) {
            held.push_back((id, due));
            stats.packets += 1;
        }
    }
}

/// The packet ids in a buffer of netlink messages.
fn packet_ids(mut bytes: &[u8]) -> Vec<u32> {
    let mut ids = Vec::new();
    while bytes.len() >= NLMSG_HDR_BYTES {
        let len = u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDR_BYTES || len > bytes.len() {
            break;
        }
        let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
            if let Some(id) = packet_id(&bytes[NLMSG_HDR_BYTES + NFGENMSG_BYTES..len]) {
                ids.push(id);
            }
        }
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
    }
    ids
}

fn packet_id(mut attrs: &[u8]) -> Option<u32> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x7fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == NFQA_PACKET_HDR && len >= 8 {
            return Some(u32::from_be_bytes(attrs[4..8].try_into().unwrap()));
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    None
}

/// Accepts every parked packet whose time has come, with one batch verdict: ids grow in arrival
/// order and every packet waits the same delay, so "all ids up to the last due one" is exact.
fn release_due(
    socket: &OwnedFd,
    queue: u16,
    held: &mut VecDeque<(u32, Instant)>,
    stats: &mut DelayStats,
) -> Result<(), String> {
    let now = Instant::now();
    let mut last_due = None;
    while let Some(&(id, due)) = held.front() {
        if due > now {
            break;
        }
        last_due = Some(id);
        held.pop_front();
    }
    if let Some(id) = last_due {
        verdict_batch(socket, queue, id)?;
        stats.verdict_batches += 1;
    }
    Ok(())
}

fn verdict_batch(socket: &OwnedFd, queue: u16, id: u32) -> Result<(), String> {
    let mut verdict = NF_ACCEPT.to_be_bytes().to_vec();
    verdict.extend_from_slice(&id.to_be_bytes());
    send(
        socket,
        &message(
            queue,
            NFQNL_MSG_VERDICT_BATCH,
            0,
            &[(NFQA_VERDICT_HDR, &verdict)],
        ),
    )
}
