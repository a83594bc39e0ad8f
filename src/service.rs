//! Living under systemd (or any supervisor): signals, readiness
//! notification, socket activation, and the limits it sets (open files,
//! memory).
//!
//! Signals: `SIGTERM`, `SIGINT` and `SIGHUP` are blocked in the main thread
//! before any other thread exists (threads inherit the mask), and one thread
//! waits for them with `sigwait`. Notification: `sd_notify`'s datagram
//! protocol over std's `UnixDatagram`. Socket activation: fd 3 when
//! `LISTEN_PID` is ours, taken over at most once. The environment is only
//! read, never changed: with threads running, changing it is undefined
//! behaviour, and this program starts no child that could inherit
//! `LISTEN_FDS`.

use std::io;
use std::net::TcpListener;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};

/// First descriptor passed by socket activation.
const SD_LISTEN_FDS_START: i32 = 3;

/// What arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// `SIGTERM` or `SIGINT`: shut down gracefully.
    Terminate,
    /// `SIGHUP`: reload.
    Reload,
}

/// The set of signals we handle.
fn handled_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write into the set we own; a
    // zeroed sigset_t is a valid value to initialise it from.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Blocks the handled signals in the calling thread; call before spawning
/// any thread so all of them inherit the mask.
pub(crate) fn block_signals() -> io::Result<()> {
    let set = handled_set();
    // SAFETY: pthread_sigmask reads `set` and changes only this thread's
    // mask; the old mask is not requested.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Waits for the next handled signal (they must be blocked).
pub(crate) fn wait() -> Signal {
    let set = handled_set();
    loop {
        let mut signal: libc::c_int = 0;
        // SAFETY: sigwait reads `set` and writes the signal number into
        // `signal`, both valid for the call.
        let rc = unsafe { libc::sigwait(&set, &mut signal) };
        if rc != 0 {
            continue;
        }
        match signal {
            libc::SIGHUP => return Signal::Reload,
            _ => return Signal::Terminate,
        }
    }
}

/// Sends a state line to systemd when started with `Type=notify`; does
/// nothing otherwise.
pub(crate) fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // Abstract socket address (Linux).
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        log::warn!("could not notify systemd ({state}): {e}");
    }
}

/// How often to send `WATCHDOG=1`, when systemd asked for it
/// (`WatchdogSec=` sets `WATCHDOG_USEC`): half the interval, as
/// sd_watchdog_enabled(3) recommends.
pub(crate) fn watchdog_interval() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid != std::process::id().to_string() {
            return None;
        }
    }
    (usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
}

/// Raises the soft limit on open files to the hard limit (as Go programs
/// do at start) and returns the limit now in force, or `None` if it cannot
/// be read. Each connection is a descriptor; the soft limit's usual
/// default of 1024 is a compatibility value for `select(2)`, which this
/// program never uses.
pub(crate) fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit from a struct we own. Raising
        // the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    #[allow(
        clippy::useless_conversion,
        reason = "rlim_t is u64 here but u32 on 32-bit ARM"
    )]
    Some(u64::from(limit.rlim_cur))
}

/// The limits that size `MAX_CONNECTIONS` when it is not set, as this
/// process has them: the open-files limit (raised to its hard limit
/// first) and the memory limit of its cgroup.
pub(crate) fn process_limits() -> crate::http::ProcessLimits {
    crate::http::ProcessLimits {
        open_files: raise_open_files_limit(),
        memory: memory_limit(),
    }
}

/// cgroup v1 reports "no limit" as the largest page count times the page
/// size, just under 2^63; any figure this high is no limit.
const NO_MEMORY_LIMIT_ABOVE: u64 = 1 << 62;

/// The most memory this process may use, in bytes: the lowest limit of its
/// own cgroup and those above it (cgroup v2 `memory.max`, v1
/// `memory.limit_in_bytes`; systemd's `MemoryMax=`, a container's memory
/// limit). `None` without one, or when it cannot be read.
pub(crate) fn memory_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    memory_limit_in(&cgroups, &mounts, |path| std::fs::read_to_string(path).ok())
}

/// [`memory_limit`] from the text of `/proc/self/cgroup` and
/// `/proc/self/mountinfo`, reading the limit files through `read`.
fn memory_limit_in(
    cgroups: &str,
    mounts: &str,
    read: impl Fn(&std::path::Path) -> Option<String>,
) -> Option<u64> {
    // Lines `ID:CONTROLLERS:PATH`: v1's memory hierarchy names `memory`,
    // v2's single one is `0::PATH`. With both (a hybrid), memory is v1's.
    let lines: Vec<(&str, &str, &str)> = cgroups
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            Some((parts.next()?, parts.next()?, parts.next()?))
        })
        .collect();
    let (path, fs_type, file) = match lines
        .iter()
        .find(|(_, controllers, _)| controllers.split(',').any(|c| c == "memory"))
    {
        Some((_, _, path)) => (*path, "cgroup", "memory.limit_in_bytes"),
        None => {
            let (_, _, path) = lines.iter().find(|(id, c, _)| *id == "0" && c.is_empty())?;
            (*path, "cgroup2", "memory.max")
        }
    };
    // mountinfo: `ID PARENT DEV ROOT MOUNTPOINT OPTIONS… - TYPE SOURCE SUPER`.
    let (root, mount_point) = mounts.lines().find_map(|line| {
        let (fields, fs) = line.split_once(" - ")?;
        let fields: Vec<&str> = fields.split(' ').collect();
        let fs: Vec<&str> = fs.split(' ').collect();
        let memory = fs_type == "cgroup2"
            || fs
                .get(2)
                .is_some_and(|o| o.split(',').any(|o| o == "memory"));
        if fs.first() != Some(&fs_type) || !memory {
            return None;
        }
        Some((*fields.get(3)?, *fields.get(4)?))
    })?;
    // The mount shows the hierarchy from `root` down (a container sees its
    // own cgroup as `/`); walk up from ours to the mount's top.
    let relative = path.strip_prefix(root).unwrap_or("");
    let mut dir = std::path::PathBuf::from(mount_point);
    dir.extend(relative.split('/').filter(|part| !part.is_empty()));
    let top = std::path::Path::new(mount_point);
    let mut lowest: Option<u64> = None;
    loop {
        let limit = read(&dir.join(file)).and_then(|text| text.trim().parse::<u64>().ok());
        if let Some(limit) = limit.filter(|&n| n < NO_MEMORY_LIMIT_ABOVE) {
            lowest = Some(lowest.map_or(limit, |l| l.min(limit)));
        }
        if dir == top || !dir.pop() {
            return lowest;
        }
    }
}

/// The listener passed by systemd socket activation, if `LISTEN_PID` names
/// this process and `LISTEN_FDS` is at least 1. Descriptor 3 is taken over
/// once per process: a later call finds it taken and says so, so no two
/// owners ever close it.
pub(crate) fn activated_listener() -> io::Result<Option<TcpListener>> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let ours = std::env::var("LISTEN_PID").ok() == Some(std::process::id().to_string());
    let count: u32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if !ours || count == 0 {
        return Ok(None);
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the socket was already taken over",
        ));
    }
    if count > 1 {
        log::warn!("LISTEN_FDS={count}: using the first socket only");
    }
    // A descriptor that is not open must not be taken over: closing it
    // later would close whatever the number is reused for (and aborts a
    // debug build).
    // SAFETY: F_GETFD only reads the descriptor's flags; any number is a
    // valid argument.
    if unsafe { libc::fcntl(SD_LISTEN_FDS_START, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: systemd passes the listening socket as fd 3 when LISTEN_PID
    // is our pid, and it is open (checked above); `TAKEN` makes this the
    // one place in the process that ever owns it. Until local_addr says it
    // is a socket, it is not ours to close (under an emulator, fd 3 can be
    // the emulator's own file).
    let listener =
        std::mem::ManuallyDrop::new(unsafe { TcpListener::from_raw_fd(SD_LISTEN_FDS_START) });
    listener.local_addr()?;
    Ok(Some(std::mem::ManuallyDrop::into_inner(listener)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    const V2_MOUNTS: &str = "\
25 30 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
30 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw";
    const V1_MOUNTS: &str = "\
34 25 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 25 0:30 /process_api /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 25 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    fn files(entries: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: HashMap<String, String> = entries
            .iter()
            .map(|(path, text)| (path.to_string(), text.to_string()))
            .collect();
        move |path: &Path| map.get(path.to_str()?).cloned()
    }

    #[test]
    fn cgroup_v2_takes_the_lowest_limit_from_the_service_up() {
        let cgroups = "0::/system.slice/sts.service\n";
        let read = files(&[
            (
                "/sys/fs/cgroup/system.slice/sts.service/memory.max",
                "67108864\n",
            ),
            ("/sys/fs/cgroup/system.slice/memory.max", "max\n"),
        ]);
        assert_eq!(memory_limit_in(cgroups, V2_MOUNTS, &read), Some(64 << 20));
        let slice_lower = files(&[
            (
                "/sys/fs/cgroup/system.slice/sts.service/memory.max",
                "max\n",
            ),
            ("/sys/fs/cgroup/system.slice/memory.max", "33554432\n"),
        ]);
        assert_eq!(
            memory_limit_in(cgroups, V2_MOUNTS, &slice_lower),
            Some(32 << 20)
        );
        let none = files(&[(
            "/sys/fs/cgroup/system.slice/sts.service/memory.max",
            "max\n",
        )]);
        assert_eq!(memory_limit_in(cgroups, V2_MOUNTS, &none), None);
    }

    #[test]
    fn cgroup_v1_reads_the_memory_hierarchy_below_the_mounts_root() {
        // The mount shows /process_api as its top; ours is below it.
        let cgroups = "4:memory:/process_api/job\n1:cpu:/\n0::/\n";
        let read = files(&[
            (
                "/sys/fs/cgroup/memory/job/memory.limit_in_bytes",
                "104857600\n",
            ),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        assert_eq!(memory_limit_in(cgroups, V1_MOUNTS, &read), Some(100 << 20));
        let unlimited = files(&[(
            "/sys/fs/cgroup/memory/job/memory.limit_in_bytes",
            "9223372036854771712\n",
        )]);
        assert_eq!(memory_limit_in(cgroups, V1_MOUNTS, &unlimited), None);
    }

    #[test]
    fn no_cgroup_file_means_no_limit() {
        assert_eq!(memory_limit_in("", V2_MOUNTS, files(&[])), None);
        assert_eq!(memory_limit_in("0::/\n", "", files(&[])), None);
    }
}
