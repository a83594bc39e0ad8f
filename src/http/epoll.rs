//! The few Linux calls the poller needs — an epoll set and an eventfd —
//! behind safe types. Each `unsafe` block is one system call on descriptors
//! these types own.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Readable (or the peer closed).
pub(crate) const READABLE: u32 = libc::EPOLLIN as u32;
/// Writable.
pub(crate) const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// The peer closed its side (reported with [`READABLE`] when asked for).
pub(crate) const PEER_CLOSED: u32 = libc::EPOLLRDHUP as u32;
/// The connection is gone: closed by the peer, hung up, or in error.
pub(crate) const GONE: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
/// Report once, then stay disarmed until [`Epoll::modify`] re-arms.
const ONESHOT: u32 = libc::EPOLLONESHOT as u32;

/// One readiness report: the token it was registered with.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct Event(libc::epoll_event);

impl Event {
    /// The token given at registration.
    pub(crate) fn token(&self) -> u64 {
        self.0.u64
    }

    /// What was reported ([`READABLE`], [`GONE`] …).
    pub(crate) fn flags(&self) -> u32 {
        self.0.events
    }
}

/// Room for the reports of one [`Epoll::wait`]: a fixed number of slots,
/// never zero, so the kernel is never handed a buffer it cannot write to.
pub(crate) struct Events {
    slots: Box<[Event]>,
    /// How many slots the last wait filled.
    len: usize,
}

impl Events {
    /// Room for `capacity` reports per wait (at most `c_int::MAX`, what
    /// `epoll_wait` can be told).
    pub(crate) fn new(capacity: NonZeroUsize) -> Events {
        let capacity = capacity.get().min(libc::c_int::MAX as usize);
        let empty = Event(libc::epoll_event { events: 0, u64: 0 });
        Events {
            slots: vec![empty; capacity].into_boxed_slice(),
            len: 0,
        }
    }

    /// The reports of the last wait.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Event> {
        self.slots[..self.len].iter()
    }
}

/// An epoll set.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// A new, empty set (close-on-exec).
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a
        // new descriptor that nothing else owns.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, interest: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: interest,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the
        // call; the kernel copies it. `fd` is borrowed from the caller.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Adds `fd`, reported (level-triggered) whenever `interest` holds.
    pub(crate) fn add(&self, fd: &impl AsRawFd, interest: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), interest, token)
    }

    /// Adds `fd`, reported once when `interest` holds.
    pub(crate) fn add_oneshot(
        &self,
        fd: &impl AsRawFd,
        interest: u32,
        token: u64,
    ) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_ADD,
            fd.as_raw_fd(),
            interest | ONESHOT,
            token,
        )
    }

    /// Re-arms a one-shot registration with a new interest and token.
    pub(crate) fn rearm(&self, fd: &impl AsRawFd, interest: u32, token: u64) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_MOD,
            fd.as_raw_fd(),
            interest | ONESHOT,
            token,
        )
    }

    /// Changes a level-triggered registration (0: report nothing).
    pub(crate) fn modify(&self, fd: &impl AsRawFd, interest: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd.as_raw_fd(), interest, token)
    }

    /// Removes `fd` from the set.
    pub(crate) fn delete(&self, fd: &impl AsRawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd.as_raw_fd(), 0, 0)
    }

    /// Waits for readiness, at most `timeout` (`None`: no limit), and
    /// puts the reports in `events`. `EINTR` is zero reports.
    pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let timeout_ms = match timeout {
            // Rounded up, so a wait for 0.4 ms does not become a busy loop.
            Some(t) => t.as_micros().div_ceil(1000).min(libc::c_int::MAX as u128) as libc::c_int,
            None => -1,
        };
        events.len = 0;
        // `Events::new` made at least one slot and at most c_int::MAX.
        let capacity = events.slots.len() as libc::c_int;
        // SAFETY: the kernel writes at most `capacity` epoll_event values
        // into the slots, which are that many initialised epoll_events
        // (Event is a transparent wrapper of epoll_event), owned by
        // `events` and borrowed mutably for the call.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.slots.as_mut_ptr().cast::<libc::epoll_event>(),
                capacity,
                timeout_ms,
            )
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            return if error.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(error)
            };
        }
        // 0 ≤ n ≤ capacity: the kernel never reports more than it was given room for.
        events.len = (n as usize).min(events.slots.len());
        Ok(())
    }
}

/// An eventfd: a counter other threads bump to wake the poller.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new non-blocking eventfd (close-on-exec).
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new
        // descriptor owned by nobody else.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Makes the descriptor readable.
    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. A full counter (EAGAIN)
        // still leaves the descriptor readable, which is all a wake needs.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&raw const one).cast::<libc::c_void>(),
                8,
            );
        }
    }

    /// Resets the counter, so the descriptor is no longer readable.
    pub(crate) fn clear(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; EAGAIN (nothing
        // to clear) is fine.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&raw mut count).cast::<libc::c_void>(),
                8,
            );
        }
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_reports_no_more_than_the_buffer_holds() {
        let epoll = Epoll::new().unwrap();
        let wakes = [EventFd::new().unwrap(), EventFd::new().unwrap()];
        for (token, wake) in (0..).zip(&wakes) {
            epoll.add(wake, READABLE, token).unwrap();
            wake.wake();
        }
        let mut one = Events::new(NonZeroUsize::MIN);
        epoll.wait(&mut one, Some(Duration::ZERO)).unwrap();
        assert_eq!(one.iter().count(), 1);
        let mut room = Events::new(NonZeroUsize::new(8).unwrap());
        epoll.wait(&mut room, Some(Duration::ZERO)).unwrap();
        let mut tokens: Vec<u64> = room.iter().map(Event::token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, [0, 1]);
    }

    #[test]
    fn a_wait_that_times_out_reports_nothing() {
        let epoll = Epoll::new().unwrap();
        let mut events = Events::new(NonZeroUsize::MIN);
        epoll.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.iter().count(), 0);
    }
}
