//! Connecting from a chosen loopback address.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long [`connect_from`] and [`Conn::try_open`](super::Conn::try_open) wait for the handshake.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `addr` from `local_ip` (any port), within 5 s.
///
/// All of `127.0.0.0/8` is local on Linux, so tests can play several
/// clients — an attacker at `127.0.0.2`, a legitimate user at `127.0.0.3` —
/// that the server tells apart by address. std cannot bind a socket before
/// connecting it, hence `libc`.
pub fn connect_from(local_ip: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    connect_from_timeout(local_ip, addr, CONNECT_TIMEOUT)
}

/// Like [`connect_from`], waiting at most `timeout` for the handshake (a
/// server whose accept queue is full never completes it).
pub fn connect_from_timeout(
    local_ip: IpAddr,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) takes no pointers; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created, is valid and owned by nobody else; the
    // `OwnedFd` closes it on every path below.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    if family == libc::AF_INET {
        // Pick the port at connect time, per destination, instead of at
        // bind time: without this, a bound address runs out of ports after
        // one ephemeral range's worth of sockets whatever they connect to.
        // Best effort (Linux 4.2+); failing only costs port space.
        let on: libc::c_int = 1;
        // SAFETY: `on` is a live c_int and the length passed is its size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                std::ptr::from_ref(&on).cast(),
                socklen_of::<libc::c_int>(),
            );
        }
    }
    let (local, local_len) = sockaddr(SocketAddr::new(local_ip, 0));
    // SAFETY: `local` is a sockaddr_storage initialised for `local_len`
    // bytes, which is what bind(2) reads.
    if unsafe {
        libc::bind(
            socket.as_raw_fd(),
            std::ptr::from_ref(&local).cast(),
            local_len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let (remote, remote_len) = sockaddr(addr);
    // SAFETY: as for bind(2) above.
    let connected = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            std::ptr::from_ref(&remote).cast(),
            remote_len,
        )
    };
    if connected != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(error);
        }
        wait_writable(&socket, timeout)?;
        let mut so_error: libc::c_int = 0;
        let mut len = socklen_of::<libc::c_int>();
        // SAFETY: `so_error` and `len` are live and `len` holds the size of
        // `so_error`, as getsockopt(2) requires.
        let got = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                std::ptr::from_mut(&mut so_error).cast(),
                &mut len,
            )
        };
        if got != 0 {
            return Err(io::Error::last_os_error());
        }
        if so_error != 0 {
            return Err(io::Error::from_raw_os_error(so_error));
        }
    }
    let stream = TcpStream::from(socket);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Waits until `socket` is writable (its non-blocking connect finished).
fn wait_writable(socket: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(ErrorKind::TimedOut, "connect timed out"));
        }
        let mut poll = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let millis = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `poll` is one live pollfd and we pass a count of 1.
        match unsafe { libc::poll(&mut poll, 1, millis) } {
            0 => {}
            n if n > 0 => return Ok(()),
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

fn socklen_of<T>() -> libc::socklen_t {
    // Socket address and option types are a few dozen bytes.
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

/// `addr` as a C socket address and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero bytes are a
    // valid (unspecified-family) value of it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every
            // socket address type, sockaddr_in included.
            unsafe {
                std::ptr::from_mut(&mut storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin);
            }
            (storage, socklen_of::<libc::sockaddr_in>())
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe {
                std::ptr::from_mut(&mut storage)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6);
            }
            (storage, socklen_of::<libc::sockaddr_in6>())
        }
    }
}
