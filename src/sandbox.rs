/*!
The worker's confinement (`sandbox = true`, `--sandbox`): what a root worker and every
program it runs (rsync, ssh, sync handlers, hooks) may still do once the tree is watched.

Why: a worker runs as root to keep ownership, and runs programs a profile names. Without
confinement a mistaken or subverted handler may write anywhere, read `/etc/shadow`, mount
file systems or load kernel modules. The kernel offers three irreversible, inherited
limits, applied here in the worker's start-up after the fork to the background, the pid
file and the uid drop, and before the first thread is started (Landlock below ABI 8 binds
the calling thread only, so a thread started earlier would stay free):

1. no-new-privileges: a setuid program or a file capability run by a handler gains
   nothing (`sudo`, `ping` stop working).
2. Landlock (pinned at ABI 6; the file rights of ABI 5 to 8 are the same): read and
   execute in the system directories (`/usr`, `/bin`, `/sbin`, `/lib*`) and read of a
   short list of `/etc` files (the libc loader cache, users and groups, name service,
   time zone, TLS roots, ssh's client configuration), never `/etc` as a whole, so
   `/etc/shadow` and host keys stay closed; read of the watch tree (read and write in a
   failover pair, whose pulls write into it); read and write of each local destination,
   the lists directory, the handlers' private `TMPDIR`, the ssh control directory, the status file's and the dump
   directory's, and the pair's record directories; read and execute of the sync handler,
   the hooks and the pair's resolver and notifier; read of the profile, `-H` and rules
   files (a reload reads them again). Signals to processes outside the worker's domain and
   abstract Unix sockets are refused (ABI 6 scopes).
3. seccomp: mount and namespace calls, ptrace, kexec, module loading, bpf, reboot, swap,
   clock setting and the keyring give `EPERM`, and so does opening a socket other than a
   Unix one when every destination is local and there is no failover pair (nothing a
   local mirror runs needs the network). `open_by_handle_at` stays allowed: the
   fanotify monitor resolves every event with it. `clone` with a `CLONE_NEW*` flag is
   refused like `unshare`. A second, hand-written filter makes the x32 calls (x86_64
   numbers with bit 30 set, which the first filter does not see) and `clone3` (whose
   flags sit in memory a filter cannot read) give `ENOSYS`: the C library then falls
   back to `clone`, which the first filter inspects.
4. Capabilities (a root worker only; a worker started by another user has none to cut):
   the bounding set keeps what rsync needs to keep owners, modes, times, device nodes,
   extended attributes and labels, and what the worker needs to drop to `uid` and stop
   its handlers (`CAP_CHOWN`, `CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`, `CAP_FOWNER`,
   `CAP_FSETID`, `CAP_MKNOD`, `CAP_SETFCAP`, `CAP_SETUID`, `CAP_SETGID`, `CAP_KILL`,
   `CAP_SYS_RESOURCE`, `CAP_MAC_ADMIN`, `CAP_MAC_OVERRIDE`; `CAP_SYS_ADMIN` only when the
   mode runs a handler of the site's or rsync copies extended attributes, whose
   `trusted.*` namespace needs it); every other one is dropped, `CAP_SETPCAP` last. The
   permitted and effective sets become the kept ones; the inheritable and ambient sets
   are emptied. `preserve-capabilities` (`-C`) keeps some of them across the drop to
   `uid` ([`keep_before_uid_drop`]).
5. Namespaces (root only): a private network namespace when every destination is local
   and there is no failover pair (`sandbox-network`), and always private IPC and host
   name (UTS) namespaces. Taken before the capabilities are cut (it needs
   `CAP_SYS_ADMIN`).

Landlock does not cover `chmod`, `chown`, `utime` or extended attributes, and Execute is
not checked when a readable file is run through `ld.so` or `dlopen`ed: the boundary is
what may be read and written. A kernel without Landlock (or with it disabled) logs one
warning and the worker goes on with no-new-privileges and seccomp.

Everything that can fail (opening each granted path, building the rule set, compiling the
filters) happens in [`Sandbox::prepare`], while the worker is still root and nothing is
irreversible; [`Sandbox::isolate`] then takes the namespaces and cuts the capabilities
(still root, before the drop to `uid`), and [`Sandbox::enforce`] applies the rest. Both
must run before the worker's first thread: capabilities, like Landlock below ABI 8, are
a thread's own.
*/

use caps::{CapSet, Capability};

use landlock::{
    Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The Landlock ABI the rules are written for (see the module doc).
const LANDLOCK_ABI: ABI = ABI::V6;

/// Whether the worker confines itself (`sandbox = true | false | "required"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Not confined.
    #[default]
    Off,
    /// Confined with what the kernel offers; a kernel without Landlock gives one warning.
    On,
    /// Confined, and a kernel without Landlock (or with it only partly enforced) is an
    /// error at start instead of a warning.
    Required,
}

impl Mode {
    /// Whether the worker confines itself at all.
    #[must_use]
    pub fn on(self) -> bool {
        self != Mode::Off
    }

    /// The word a profile or the command line writes.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "false",
            Mode::On => "true",
            Mode::Required => "required",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "yes" | "1" | "true" | "on" => Ok(Mode::On),
            "no" | "0" | "false" | "off" => Ok(Mode::Off),
            "required" => Ok(Mode::Required),
            _ => Err(format!("{s:?}: expected true, false or required")),
        }
    }
}

impl serde::Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Mode::Off => s.serialize_bool(false),
            Mode::On => s.serialize_bool(true),
            Mode::Required => s.serialize_str("required"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Mode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or \"required\"")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Mode, E> {
                Ok(if v { Mode::On } else { Mode::Off })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Mode, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The network a confined worker keeps (`sandbox-network`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// A private network namespace when every destination is local and there is no
    /// failover pair; the host's otherwise.
    #[default]
    Auto,
    /// Always a private network namespace (refused when a destination is remote).
    Private,
    /// Always the host's network (hooks that call out, say).
    Host,
}

impl Network {
    /// The word a profile or the command line writes.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Auto => "auto",
            Network::Private => "private",
            Network::Host => "host",
        }
    }
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Network::Auto),
            "private" => Ok(Network::Private),
            "host" => Ok(Network::Host),
            _ => Err(format!("{s:?}: expected auto, private or host")),
        }
    }
}

/// Paths a site grants a confined worker besides what it needs itself
/// (`sandbox-read`, `sandbox-write`, `sandbox-exec`): a handler's own configuration, a
/// `--backup-dir` elsewhere, an interpreter in /opt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    /// Read (files and directory listings).
    pub read: Vec<PathBuf>,
    /// Read and write.
    pub write: Vec<PathBuf>,
    /// Read and execute.
    pub exec: Vec<PathBuf>,
}

impl Extra {
    /// These paths after those of `lower` (the lists add up over the layers).
    #[must_use]
    pub fn after(self, lower: Extra) -> Extra {
        let join = |mut a: Vec<PathBuf>, b: Vec<PathBuf>| {
            a.extend(b);
            a
        };
        Extra {
            read: join(lower.read, self.read),
            write: join(lower.write, self.write),
            exec: join(lower.exec, self.exec),
        }
    }

    /// Each path must exist: a site that names one means it (a typo would otherwise leave
    /// its handler failing at the first sync).
    pub fn check(&self) -> Result<(), String> {
        let lists = [
            ("sandbox-read", &self.read),
            ("sandbox-write", &self.write),
            ("sandbox-exec", &self.exec),
        ];
        for (key, paths) in lists {
            for p in paths {
                if let Err(e) = std::fs::metadata(p) {
                    return Err(format!("{key} {}: {e}", crate::logger::path(p)));
                }
            }
        }
        Ok(())
    }

    /// Whether no path is granted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.read.is_empty() && self.write.is_empty() && self.exec.is_empty()
    }
}

/// What the sync handlers of a worker that drops to `uid` inherit of the capabilities
/// it keeps (`inherit-capabilities`, the original's `--inherit-capabilities`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Inherit {
    /// Nothing (the original's default).
    #[default]
    Empty,
    /// The original leaves the inheritable set as it found it; here it is emptied all
    /// the same (nothing is inherited).
    DontTouch,
    /// The capabilities of `preserve-capabilities` go into the inheritable and ambient
    /// sets: the handlers, run as `uid`, keep them across exec.
    Clsync,
    /// The same as `clsync`: what the worker keeps is what `preserve-capabilities` names.
    Permitted,
}

impl Inherit {
    /// The word a profile or the command line writes.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Inherit::Empty => "empty",
            Inherit::DontTouch => "dont-touch",
            Inherit::Clsync => "clsync",
            Inherit::Permitted => "permitted",
        }
    }

    /// Whether the handlers get the preserved capabilities.
    #[must_use]
    pub fn passes_on(self) -> bool {
        matches!(self, Inherit::Clsync | Inherit::Permitted)
    }
}

impl std::str::FromStr for Inherit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "empty" => Ok(Inherit::Empty),
            "dont-touch" => Ok(Inherit::DontTouch),
            "clsync" => Ok(Inherit::Clsync),
            // "permittied": the original's own spelling.
            "permitted" | "permittied" => Ok(Inherit::Permitted),
            _ => Err(format!(
                "{s:?}: expected empty, dont-touch, clsync or permitted"
            )),
        }
    }
}

/// The capabilities `preserve-capabilities` may keep across the drop to `uid`: the
/// original's four.
pub const PRESERVABLE: &[Capability] = &[
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_KILL,
];

/// Parses `preserve-capabilities`: names separated by commas, with or without `CAP_`, in
/// any case (`CAP_DAC_READ_SEARCH,kill`); an empty list keeps none. A capability that is
/// not one of [`PRESERVABLE`] is refused by name.
pub fn parse_preserved(list: &str) -> Result<Vec<Capability>, String> {
    let mut caps = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let canonical = caps::to_canonical(name);
        let cap: Capability = canonical
            .parse()
            .map_err(|_| format!("{name:?} is not a capability"))?;
        if !PRESERVABLE.contains(&cap) {
            return Err(format!(
                "{cap} cannot be kept after the drop to uid: only CAP_DAC_READ_SEARCH, CAP_SETUID, CAP_SETGID and CAP_KILL can"
            ));
        }
        if !caps.contains(&cap) {
            caps.push(cap);
        }
    }
    Ok(caps)
}

/// The capabilities a confined root worker keeps (module doc, item 4), besides
/// `CAP_SYS_ADMIN` when [`Grants::sys_admin`].
const KEPT_CAPS: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_MKNOD,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_KILL,
    Capability::CAP_SYS_RESOURCE,
    Capability::CAP_MAC_ADMIN,
    Capability::CAP_MAC_OVERRIDE,
];

/// `sandbox-network = "private"` cannot be honoured when something is reached over the
/// network: a remote destination, or a failover pair's peer. The reason, for a start
/// refused with a usage error.
pub fn check_network(cfg: &crate::config::Config) -> Result<(), String> {
    if !cfg.sandbox.on() || cfg.sandbox_network != Network::Private {
        return Ok(());
    }
    if cfg.pair.is_some() {
        return Err(
            "sandbox-network = \"private\" cannot be honoured: a failover pair reaches its peer over the network (use auto or host)"
                .to_string(),
        );
    }
    match cfg
        .destinations()
        .into_iter()
        .find(|d| !matches!(d, crate::dest::Dest::Local(_)))
    {
        Some(d) => Err(format!(
            "sandbox-network = \"private\" cannot be honoured: destination {} is reached over the network (use auto or host)",
            d.show()
        )),
        None => Ok(()),
    }
}

/// Whether rsync's options copy extended attributes (`-X`, `--xattrs`, or `X` in a
/// bundle of short options such as `-aHAX`): `trusted.*` ones need `CAP_SYS_ADMIN`.
fn copies_xattrs<'a>(args: impl IntoIterator<Item = &'a std::ffi::OsString>) -> bool {
    args.into_iter().any(|a| {
        let a = a.as_encoded_bytes();
        a == b"--xattrs" || (a.len() > 1 && a[0] == b'-' && a[1] != b'-' && a.contains(&b'X'))
    })
}

/// System directories: read and execute (those that exist).
const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32"];

/// Files and directories under /etc that rsync, ssh and the C library read (from strace of
/// `rsync -aHAX` and `ssh`); read only, one rule each.
const ETC_READ: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.preload",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/localtime",
    "/etc/popt",
    "/etc/popt.d",
    "/etc/ssl",
    "/etc/selinux/config",
    "/proc/sys/fs/inotify",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
];

/// ssh's system-wide client configuration and known hosts: read, with an ssh destination.
const SSH_ETC_READ: &[&str] = &[
    "/etc/ssh/ssh_config",
    "/etc/ssh/ssh_config.d",
    "/etc/ssh/ssh_known_hosts",
    "/etc/ssh/ssh_known_hosts2",
];

/// Refused with `EPERM` by the seccomp filter.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const DENIED_CALLS: &[libc::c_long] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_perf_event_open,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
];

/// The paths a worker is granted, by kind of access.
#[derive(Debug, Default, Clone)]
pub struct Grants {
    /// Read (files and directory listings).
    pub read: Vec<PathBuf>,
    /// Read and execute.
    pub exec: Vec<PathBuf>,
    /// Read and write (everything but execute).
    pub write: Vec<PathBuf>,
    /// Removing empty directories only: the parents of the worker's temporary directories,
    /// which it removes at exit.
    pub remove_dir: Vec<PathBuf>,
    /// Every destination is a local directory and there is no failover pair: sockets
    /// other than Unix ones are refused (`EPERM`).
    pub local_only: bool,
    /// A kernel that cannot enforce Landlock fully is an error (`sandbox = "required"`).
    pub required: bool,
    /// A private network namespace (`sandbox-network`: `auto` with every destination
    /// local and no pair, or `private`).
    pub private_network: bool,
    /// `sandbox-network = "private"`: a private network namespace that cannot be taken is
    /// an error, not a warning.
    pub network_required: bool,
    /// Keep `CAP_SYS_ADMIN`: the mode runs a handler of the site's, or rsync copies
    /// extended attributes.
    pub sys_admin: bool,
}

impl Grants {
    /// What a worker with these settings needs: `src` (the canonical watch tree), `handler`
    /// (the resolved sync handler), `lists_dir` and `control` (the ssh control directory).
    #[must_use]
    pub fn for_worker(
        cfg: &crate::config::Config,
        src: &Path,
        handler: &Path,
        lists_dir: &Path,
        control: Option<&Path>,
    ) -> Self {
        let local = cfg.pair.is_none()
            && cfg
                .destinations()
                .iter()
                .all(|d| matches!(d, crate::dest::Dest::Local(_)));
        let user_handler = cfg.mode != crate::sync::handler::Mode::RsyncDirect;
        let mut g = Grants {
            // `host`: the site's hooks call out (a webhook, say); sockets stay allowed.
            local_only: local && cfg.sandbox_network != Network::Host,
            required: cfg.sandbox == Mode::Required,
            private_network: match cfg.sandbox_network {
                Network::Auto => local,
                Network::Private => true,
                Network::Host => false,
            },
            network_required: cfg.sandbox_network == Network::Private,
            sys_admin: user_handler
                || copies_xattrs(&cfg.rsync_options)
                || copies_xattrs(cfg.handler_args.iter().flatten()),
            ..Grants::default()
        };
        g.exec.extend(SYSTEM_DIRS.iter().map(PathBuf::from));
        g.exec.push(handler.to_path_buf());
        g.exec
            .extend(cfg.pre_exit_hook.iter().chain(&cfg.exit_hook).cloned());
        g.read.extend(ETC_READ.iter().map(PathBuf::from));
        g.write.push(PathBuf::from("/dev/null"));
        if let Some(pair) = &cfg.pair {
            g.write.push(src.to_path_buf());
            g.write.push(pair.dir.clone());
            g.write.push(pair.peer_dir.clone());
            g.exec
                .extend(pair.resolver.iter().chain(&pair.notify).cloned());
        } else {
            g.read.push(src.to_path_buf());
        }
        for d in cfg.destinations() {
            if let crate::dest::Dest::Local(p) = d {
                g.write.push(p);
            }
        }
        for dir in std::iter::once(lists_dir).chain(control) {
            g.write.push(dir.to_path_buf());
            if let Some(parent) = dir.parent() {
                g.remove_dir.push(parent.to_path_buf());
            }
        }
        if let Some(parent) = cfg.status_file.as_deref().and_then(Path::parent) {
            g.write.push(parent.to_path_buf());
        }
        g.write.extend(cfg.dump_dir.iter().cloned());
        g.write.extend(cfg.index_dir.iter().cloned());
        g.read.extend(cfg.rules_file.iter().cloned());
        for (_, file) in cfg.rules_inline.iter() {
            g.read.push(file.clone());
        }
        for (_, _, file) in cfg.globs.iter() {
            g.read.push(file.clone());
        }
        let homes = ssh_homes(cfg);
        if !homes.is_empty() {
            let files = SshFiles::of(&cfg.ssh, &homes);
            g.read.extend(SSH_ETC_READ.iter().map(PathBuf::from));
            g.read.extend(homes.iter().map(|h| h.join(".ssh")));
            g.read.extend(files.read);
            g.write.extend(files.write);
        }
        // A bare `ssh` is found in PATH (the system directories); a path is granted.
        if let Some(c) = cfg.ssh.command.as_deref().filter(|c| c.contains('/')) {
            g.exec.push(PathBuf::from(c));
        }
        g.read.extend(cfg.rsync_password_file.iter().cloned());
        let extra = &cfg.sandbox_extra;
        g.read.extend(extra.read.iter().cloned());
        g.write.extend(extra.write.iter().cloned());
        g.exec.extend(extra.exec.iter().cloned());
        g
    }
}

/// The homes of the users who run ssh, when a destination is reached over ssh: the
/// worker's (`uid`, else the running user) and the sync handler's (`sync-handler-uid`),
/// whose rsync starts ssh. ssh reads `~/.ssh`; it is never writable, or a confined worker
/// could add keys to `authorized_keys`.
fn ssh_homes(cfg: &crate::config::Config) -> Vec<PathBuf> {
    let remote = cfg
        .destinations()
        .iter()
        .any(|d| matches!(d, crate::dest::Dest::Ssh { .. }));
    if !remote {
        return Vec::new();
    }
    let worker = cfg.uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    let mut homes = Vec::new();
    for uid in std::iter::once(worker).chain(cfg.sync_handler_uid) {
        let home = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.dir);
        if let Some(h) = home.filter(|h| !homes.contains(h)) {
            homes.push(h);
        }
    }
    homes
}

/// The files ssh reads and writes that its settings name (`ssh-identity`, and in
/// `ssh-options`: `-i FILE`, `-F FILE`, `-o IdentityFile=`, `CertificateFile=`,
/// `UserKnownHostsFile=`, `GlobalKnownHostsFile=`, `RevokedHostKeys=`, each either one
/// word like `-oKey=value` or two like `-o` `Key value`), as ssh finds them: `~/` and
/// `%d` are each home of [`ssh_homes`]. Read for keys, certificates and configuration;
/// read and write (a file rule: no file can be made or removed beside it) for the
/// known-hosts files, which `StrictHostKeyChecking=accept-new` appends to (the default
/// ones, `~/.ssh/known_hosts` and `known_hosts2`, when no `UserKnownHostsFile` is
/// given).
#[derive(Debug, Default, PartialEq, Eq)]
struct SshFiles {
    read: Vec<PathBuf>,
    write: Vec<PathBuf>,
}

impl SshFiles {
    fn of(ssh: &crate::dest::Ssh, homes: &[PathBuf]) -> SshFiles {
        let mut f = SshFiles::default();
        let mut user_known_hosts = false;
        if let Some(id) = &ssh.identity {
            f.identity(id);
        }
        let mut words = ssh.options.iter().map(String::as_str);
        while let Some(w) = words.next() {
            // `-oX`, or `-o` then `X`; the same for -i and -F.
            let (flag, attached) = match w.as_bytes() {
                [b'-', c @ (b'o' | b'i' | b'F'), ..] => (*c, &w[2..]),
                _ => continue,
            };
            let value = if attached.is_empty() {
                match words.next() {
                    Some(v) => v,
                    None => break,
                }
            } else {
                attached
            };
            match flag {
                b'i' => f.each(value, homes, Kind::Identity),
                b'F' => f.each(value, homes, Kind::Read),
                _ => {
                    let (key, val) = split_option(value);
                    match key.to_ascii_lowercase().as_str() {
                        "identityfile" => f.each(val, homes, Kind::Identity),
                        "certificatefile" | "revokedhostkeys" => f.each(val, homes, Kind::Read),
                        "globalknownhostsfile" => {
                            for p in val.split_whitespace() {
                                f.each(p, homes, Kind::Read);
                            }
                        }
                        "userknownhostsfile" => {
                            user_known_hosts = true;
                            for p in val.split_whitespace().filter(|p| *p != "none") {
                                f.each(p, homes, Kind::KnownHosts);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        if !user_known_hosts {
            for h in homes {
                for name in ["known_hosts", "known_hosts2"] {
                    f.known_hosts(h.join(".ssh").join(name));
                }
            }
        }
        f
    }

    /// `value` with `~/` and `%d` made each home (once when it names none); a value
    /// with another `%` token is not granted (it depends on the host: `sandbox-read`).
    fn each(&mut self, value: &str, homes: &[PathBuf], kind: Kind) {
        let value = value.trim_matches('"');
        let mut paths = Vec::new();
        if value.starts_with("~/") || value.contains("%d") {
            for h in homes {
                let home = h.to_string_lossy();
                let v = match value.strip_prefix('~') {
                    Some(rest) => format!("{home}{rest}"),
                    None => value.to_string(),
                };
                paths.push(v.replace("%d", &home));
            }
        } else {
            paths.push(value.to_string());
        }
        for p in paths {
            if p.replace("%%", "").contains('%') || !p.starts_with('/') {
                log::debug!(
                    "sandbox: not granting the ssh file {p:?}: name it with sandbox-read or sandbox-write"
                );
                continue;
            }
            let p = PathBuf::from(p.replace("%%", "%"));
            match kind {
                Kind::Read => self.read.push(p),
                Kind::Identity => self.identity(&p),
                Kind::KnownHosts => self.known_hosts(p),
            }
        }
    }

    /// A key, with the public key and certificate ssh looks for beside it.
    fn identity(&mut self, key: &Path) {
        self.read.push(key.to_path_buf());
        for suffix in [".pub", "-cert.pub"] {
            let mut p = key.as_os_str().to_os_string();
            p.push(suffix);
            self.read.push(PathBuf::from(p));
        }
    }

    /// A known-hosts file: read and write when it is an existing file (a file rule, so
    /// its directory stays closed), nothing otherwise (ssh then warns it cannot add a
    /// host key and goes on).
    fn known_hosts(&mut self, p: PathBuf) {
        match std::fs::metadata(&p) {
            Ok(m) if !m.is_dir() => self.write.push(p),
            Ok(_) => log::debug!(
                "sandbox: the known-hosts file {} is a directory: not granted",
                p.display()
            ),
            Err(e) => log::debug!(
                "sandbox: the known-hosts file {}: {e}: ssh cannot add host keys to it",
                p.display()
            ),
        }
    }
}

/// How ssh uses a file named in its settings.
#[derive(Clone, Copy)]
enum Kind {
    Read,
    Identity,
    KnownHosts,
}

/// An ssh `-o` option: `Key=value`, `Key value` or `Key = value`.
fn split_option(opt: &str) -> (&str, &str) {
    let opt = opt.trim_start();
    let end = opt
        .find(|c: char| c == '=' || c.is_whitespace())
        .unwrap_or(opt.len());
    let (key, rest) = opt.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    (key, rest.trim())
}

/// A prepared confinement: opened rules and compiled filters, applied by
/// [`Sandbox::isolate`] and [`Sandbox::enforce`].
pub struct Sandbox {
    ruleset: Option<RulesetCreated>,
    /// Why Landlock is not used, when it is not (told once by `enforce`).
    no_landlock: Option<String>,
    filter: Option<seccompiler::BpfProgram>,
    /// x32 calls and `clone3` give `ENOSYS` ([`fallback_filter`]).
    fallback: Option<seccompiler::BpfProgram>,
    local_only: bool,
    required: bool,
    private_network: bool,
    network_required: bool,
    sys_admin: bool,
    /// What [`Sandbox::isolate`] did, for [`Enforced`].
    capabilities: Option<Vec<String>>,
    namespaces: Vec<&'static str>,
}

/// What [`Sandbox::isolate`] and [`Sandbox::enforce`] achieved, for the start-up log
/// line and the worker's state (`sandbox` in the state JSON and `clsync-manager status`;
/// see [`crate::report::Sandbox`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Enforced {
    /// `full`, `partial` or `none`.
    #[serde(deserialize_with = "landlock_word")]
    pub landlock: LandlockWord,
    /// How many system calls the filter refuses (0: no filter on this architecture).
    pub seccomp: usize,
    /// Sockets other than Unix ones are refused (every destination is local).
    pub no_network: bool,
    /// x32 calls and `clone3` give `ENOSYS` (the second filter).
    #[serde(default)]
    pub fallback_filter: bool,
    /// The capabilities kept in the bounding, permitted and effective sets (`CAP_…`
    /// names); `None` when the worker is not root and had none to cut.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    /// The private namespaces taken (`net`, `ipc`, `uts`).
    #[serde(default)]
    pub namespaces: Vec<String>,
}

impl Enforced {
    /// The start-up line: `sandbox: landlock full, seccomp (…), …`.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut s = format!(
            "sandbox: landlock {}, seccomp ({} calls refused{}{}), no-new-privileges",
            self.landlock,
            self.seccomp,
            if self.no_network {
                ", network sockets too"
            } else {
                ""
            },
            if self.fallback_filter {
                "; x32 and clone3 give ENOSYS"
            } else {
                ""
            }
        );
        match &self.capabilities {
            Some(kept) => s.push_str(&format!(", capabilities cut to {}", kept.len())),
            None => s.push_str(", capabilities: none to cut (not root)"),
        }
        if self.namespaces.is_empty() {
            s.push_str(", no private namespaces");
        } else {
            s.push_str(&format!(
                ", private namespaces: {}",
                self.namespaces.join(" ")
            ));
        }
        s
    }
}

/// One of Landlock's words in [`Enforced`]. A name for `&'static str`, so that serde does
/// not take the field for a string borrowed from the input (it is read back through
/// [`landlock_word`], from a report line that does not outlive the read).
pub type LandlockWord = &'static str;

/// [`Enforced::landlock`] read back (the manager reads the worker's report): one of the
/// words `enforce` writes.
fn landlock_word<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let word = <String as serde::Deserialize>::deserialize(d)?;
    ["full", "partial", "none"]
        .into_iter()
        .find(|w| *w == word)
        .ok_or_else(|| {
            serde::de::Error::custom(format!("landlock {word:?}: expected full, partial or none"))
        })
}

impl Sandbox {
    /// Opens every granted path (missing ones are skipped with a debug line), builds the
    /// Landlock rule set and compiles the seccomp filter. Nothing is applied yet.
    pub fn prepare(g: &Grants) -> Result<Self, String> {
        let (ruleset, no_landlock) = match landlock_ruleset(g) {
            Ok(r) => (Some(r), None),
            Err(e) if g.required => {
                return Err(format!(
                    "sandbox = \"required\" but Landlock cannot be used: {e}"
                ))
            }
            Err(e) => (None, Some(e)),
        };
        Ok(Self {
            ruleset,
            no_landlock,
            filter: seccomp_filter(g.local_only)?,
            fallback: fallback_filter(libc::ENOSYS),
            local_only: g.local_only,
            required: g.required,
            private_network: g.private_network,
            network_required: g.network_required,
            sys_admin: g.sys_admin,
            capabilities: None,
            namespaces: Vec::new(),
        })
    }

    /// Takes the private namespaces and cuts the capabilities (module doc, items 4 and
    /// 5). While the worker is still root (before the drop to `uid`: unsharing needs
    /// `CAP_SYS_ADMIN`, cutting needs `CAP_SETPCAP`) and before its first thread (each
    /// thread has its own capabilities). A worker that is not root has nothing to cut
    /// and cannot unshare: said in a debug line (a warning when `sandbox-network =
    /// "private"` asked for it: then it is an error).
    pub fn isolate(&mut self) -> Result<(), String> {
        single_thread()?;
        if !nix::unistd::geteuid().is_root() {
            if self.network_required {
                return Err(
                    "sandbox-network = \"private\" cannot be honoured: only a root worker can take a private network namespace"
                        .to_string(),
                );
            }
            log::debug!("sandbox: not root: no capabilities to cut, no private namespaces to take");
            return Ok(());
        }
        self.namespaces = self.unshare()?;
        let keep = kept_capabilities(self.sys_admin)?;
        cut_capabilities(&keep)?;
        self.capabilities = Some(keep.iter().map(ToString::to_string).collect());
        Ok(())
    }

    /// The namespaces: network when chosen, IPC and UTS always. An `EPERM` (a root
    /// without `CAP_SYS_ADMIN`, in a container) is one warning, unless the private network
    /// was required.
    fn unshare(&self) -> Result<Vec<&'static str>, String> {
        let mut flags = libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        let mut names = vec!["ipc", "uts"];
        if self.private_network {
            flags |= libc::CLONE_NEWNET;
            names.insert(0, "net");
        }
        // SAFETY: unshare takes flags only; the worker has one thread here.
        let done = unsafe { libc::unshare(flags) };
        match nix::errno::Errno::result(done) {
            Ok(_) => Ok(names),
            Err(e) if self.network_required => Err(format!(
                "sandbox-network = \"private\" cannot be honoured: unshare: {e}"
            )),
            Err(e) => {
                log::warn!(
                    "sandbox: cannot take private namespaces ({}): {e}; the rest of the sandbox applies",
                    names.join(" ")
                );
                Ok(Vec::new())
            }
        }
    }

    /// Applies no-new-privileges, the Landlock rule set and the seccomp filter to this
    /// process (and so to everything it starts from now on). Must run before the worker
    /// starts its first thread; refused when it has more than one.
    pub fn enforce(self) -> Result<Enforced, String> {
        single_thread()?;
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| format!("sandbox: cannot set no-new-privileges: {e}"))?;
        let landlock = match self.ruleset {
            Some(r) => match r.restrict_self() {
                Ok(st) => match st.ruleset {
                    RulesetStatus::FullyEnforced => "full",
                    RulesetStatus::PartiallyEnforced | RulesetStatus::NotEnforced
                        if self.required =>
                    {
                        return Err(format!(
                            "sandbox = \"required\" but this kernel does not enforce Landlock fully ({:?})",
                            st.landlock
                        ))
                    }
                    RulesetStatus::PartiallyEnforced => {
                        log::warn!(
                            "sandbox: Landlock is only partly enforced by this kernel ({:?}): some file rights are not confined",
                            st.landlock
                        );
                        "partial"
                    }
                    RulesetStatus::NotEnforced => {
                        warn_no_landlock(&landlock_missing(&st.landlock));
                        "none"
                    }
                },
                Err(e) => return Err(format!("sandbox: Landlock: {e}")),
            },
            None => {
                warn_no_landlock(self.no_landlock.as_deref().unwrap_or("unknown"));
                "none"
            }
        };
        let seccomp = match &self.filter {
            Some(f) => {
                seccompiler::apply_filter(f).map_err(|e| format!("sandbox: seccomp: {e}"))?;
                // and clone with a CLONE_NEW* flag
                denied_calls().len() + 1
            }
            None => 0,
        };
        if let Some(f) = &self.fallback {
            seccompiler::apply_filter(f).map_err(|e| format!("sandbox: seccomp: {e}"))?;
        }
        Ok(Enforced {
            landlock,
            seccomp,
            no_network: self.local_only && self.filter.is_some(),
            fallback_filter: self.fallback.is_some(),
            capabilities: self.capabilities,
            namespaces: self.namespaces.iter().map(|n| (*n).to_string()).collect(),
        })
    }
}

/// Refuses to go on when the worker runs more than one thread: capabilities and
/// Landlock (below ABI 8) bind the calling thread only.
fn single_thread() -> Result<(), String> {
    let threads = thread_count();
    if threads == Some(1) {
        return Ok(());
    }
    Err(format!(
        "sandbox: the worker already runs {} threads; the confinement would miss them",
        threads.map_or_else(|| "an unknown number of".to_string(), |n| n.to_string())
    ))
}

/// The capabilities a root worker keeps: [`KEPT_CAPS`] (and `CAP_SYS_ADMIN` when
/// `sys_admin`), of those it has (a container or a unit may have taken some already).
fn kept_capabilities(sys_admin: bool) -> Result<Vec<Capability>, String> {
    let permitted = caps::read(None, CapSet::Permitted)
        .map_err(|e| format!("sandbox: capabilities: permitted set: {e}"))?;
    let sys_admin = sys_admin.then_some(Capability::CAP_SYS_ADMIN);
    Ok(KEPT_CAPS
        .iter()
        .copied()
        .chain(sys_admin)
        .filter(|c| permitted.contains(c))
        .collect())
}

/// Cuts the capabilities to `keep`: every other one leaves the bounding set
/// (`CAP_SETPCAP`, which dropping needs, last), the inheritable and ambient sets are
/// emptied and the permitted and effective sets become `keep`.
fn cut_capabilities(keep: &[Capability]) -> Result<(), String> {
    let fail =
        |what: &str, e: caps::errors::CapsError| format!("sandbox: capabilities: {what}: {e}");
    for cap in caps::all() {
        if keep.contains(&cap) || cap == Capability::CAP_SETPCAP {
            continue;
        }
        // A capability this kernel does not know is not in its bounding set.
        if caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| fail("bounding set", e))?;
        }
    }
    // Capabilities newer than the `caps` crate: by number, up to the kernel's last.
    for index in (Capability::CAP_CHECKPOINT_RESTORE.index() + 1)..64 {
        // SAFETY: prctl with integer arguments only.
        let known = unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(index)) };
        if known < 0 {
            break;
        }
        if known == 1 {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(index)) } != 0 {
                return Err(format!(
                    "sandbox: capabilities: bounding set: capability {index}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    if !keep.contains(&Capability::CAP_SETPCAP) {
        caps::drop(None, CapSet::Bounding, Capability::CAP_SETPCAP)
            .map_err(|e| fail("bounding set", e))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| fail("ambient set", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| fail("inheritable set", e))?;
    let set: caps::CapsHashSet = keep.iter().copied().collect();
    // Effective first: it must stay within the permitted set at each step.
    caps::set(None, CapSet::Effective, &set).map_err(|e| fail("effective set", e))?;
    caps::set(None, CapSet::Permitted, &set).map_err(|e| fail("permitted set", e))?;
    Ok(())
}

/// `preserve-capabilities` (`-C`), before the drop to `uid`: the permitted set survives
/// `setuid` (`PR_SET_KEEPCAPS`). Nothing to do without a list.
pub fn keep_before_uid_drop(preserve: &[Capability]) -> Result<(), String> {
    if preserve.is_empty() {
        return Ok(());
    }
    caps::securebits::set_keepcaps(true)
        .map_err(|e| format!("preserve-capabilities: PR_SET_KEEPCAPS: {e}"))
}

/// `preserve-capabilities` (`-C`), after the drop to `uid`: the permitted and effective
/// sets become the list (the kernel emptied the effective set at `setuid`), and with
/// `inherit-capabilities = clsync|permitted` the inheritable and ambient sets too, so the
/// handlers the worker runs as `uid` keep them across exec.
pub fn keep_after_uid_drop(preserve: &[Capability], inherit: Inherit) -> Result<(), String> {
    if preserve.is_empty() {
        return Ok(());
    }
    let fail =
        |what: &str, e: caps::errors::CapsError| format!("preserve-capabilities: {what}: {e}");
    caps::securebits::set_keepcaps(false).map_err(|e| fail("PR_SET_KEEPCAPS", e))?;
    let set: caps::CapsHashSet = preserve.iter().copied().collect();
    caps::set(None, CapSet::Effective, &set).map_err(|e| fail("effective set", e))?;
    caps::set(None, CapSet::Permitted, &set).map_err(|e| fail("permitted set", e))?;
    if inherit.passes_on() {
        caps::set(None, CapSet::Inheritable, &set).map_err(|e| fail("inheritable set", e))?;
        for &cap in preserve {
            caps::raise(None, CapSet::Ambient, cap).map_err(|e| fail("ambient set", e))?;
        }
    }
    Ok(())
}

/// Why Landlock is not there, in the words of the fix.
fn landlock_missing(st: &landlock::LandlockStatus) -> String {
    match st {
        landlock::LandlockStatus::NotImplemented => "not built into this kernel".to_string(),
        landlock::LandlockStatus::NotEnabled => "disabled: boot with landlock in lsm=".to_string(),
        other => format!("{other:?}"),
    }
}

fn warn_no_landlock(why: &str) {
    log::warn!(
        "sandbox: this kernel does not enforce Landlock ({why}): files are not confined; no-new-privileges and seccomp still apply"
    );
}

fn landlock_ruleset(g: &Grants) -> Result<RulesetCreated, String> {
    let abi = LANDLOCK_ABI;
    let all = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi) & !AccessFs::Execute;
    let exec = AccessFs::from_read(abi);
    let write = all & !AccessFs::Execute;
    let remove_dir = landlock::BitFlags::from(AccessFs::RemoveDir);
    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(Ruleset::create)
        .map_err(|e| e.to_string())?;
    let kinds = [
        (&g.read, read),
        (&g.exec, exec),
        (&g.write, write),
        (&g.remove_dir, remove_dir),
    ];
    for (paths, access) in kinds {
        for p in paths {
            let fd = match PathFd::new(p) {
                Ok(fd) => fd,
                Err(e) => {
                    log::debug!("sandbox: not granting {}: {e}", p.display());
                    continue;
                }
            };
            // A file gets the file rights of the kind only (a directory right on a file
            // is refused by the kernel).
            // Asked of the descriptor opened, not of the path again (which could name
            // another file by now).
            let is_dir = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(
                &std::os::fd::AsFd::as_fd(&fd),
            ))
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
            let access = if is_dir {
                access
            } else {
                access & AccessFs::from_file(abi)
            };
            if access.is_empty() {
                continue;
            }
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, access))
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    Ok(ruleset)
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn denied_calls() -> &'static [libc::c_long] {
    DENIED_CALLS
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn denied_calls() -> &'static [libc::c_long] {
    &[]
}

/// The deny-list filter: the calls of [`DENIED_CALLS`] give `EPERM`, all else is allowed.
/// `None` on an architecture the filter is not written for.
fn seccomp_filter(local_only: bool) -> Result<Option<seccompiler::BpfProgram>, String> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };
    let Ok(arch) = TargetArch::try_from(std::env::consts::ARCH) else {
        log::warn!(
            "sandbox: no seccomp filter on {}: mount, ptrace and module loading are not refused",
            std::env::consts::ARCH
        );
        return Ok(None);
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        denied_calls().iter().map(|&nr| (nr, Vec::new())).collect();
    // clone with any CLONE_NEW* flag, one rule per flag (any rule matching refuses).
    // The flags are the first argument on x86_64 and aarch64 alike; CLONE_NEWTIME is
    // not among them (clone gives that bit to the exit signal; unshare is refused).
    let mut new_ns = Vec::new();
    for flag in [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWCGROUP,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
    ] {
        #[allow(clippy::cast_sign_loss)] // the flags are positive
        let flag = flag as u64;
        let rule = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )
        .and_then(|c| SeccompRule::new(vec![c]))
        .map_err(|e| format!("sandbox: seccomp filter: {e}"))?;
        new_ns.push(rule);
    }
    rules.insert(libc::SYS_clone, new_ns);
    if local_only {
        // socket(domain != AF_UNIX): nothing a local mirror runs needs the network.
        let not_unix = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Ne,
            libc::AF_UNIX as u64,
        )
        .and_then(|c| SeccompRule::new(vec![c]))
        .map_err(|e| format!("sandbox: seccomp filter: {e}"))?;
        rules.insert(libc::SYS_socket, vec![not_unix]);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("sandbox: seccomp filter: {e}"))?;
    let prog = seccompiler::BpfProgram::try_from(filter)
        .map_err(|e| format!("sandbox: seccomp filter: {e}"))?;
    Ok(Some(prog))
}

/// BPF instructions (linux/bpf_common.h): BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K,
/// BPF_JMP|BPF_JGE|BPF_K, BPF_RET|BPF_K.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
/// x32 system calls are x86_64's with this bit set (same audit architecture).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_003E);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_00B7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// The second filter, written by hand: on this architecture, x32 calls (x86_64 only) and
/// `clone3` give `errno` (`ENOSYS` in use); everything else, and other architectures (the
/// first filter kills those), is allowed. seccompiler's filter matches call numbers only,
/// so it neither sees an x32 call (the number with [`X32_SYSCALL_BIT`]) nor can it read
/// `clone3`'s flags (they are in memory): on `ENOSYS` the C library falls back to `clone`,
/// whose flags the first filter checks. `None` on an architecture it is not written for.
fn fallback_filter(errno: i32) -> Option<seccompiler::BpfProgram> {
    use seccompiler::sock_filter;
    let arch = AUDIT_ARCH?;
    let op = |code, k| sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code, k, jt, jf| sock_filter { code, jt, jf, k };
    #[allow(clippy::cast_sign_loss)] // errno and call numbers are positive
    let (errno, clone3) = (errno as u32, libc::SYS_clone3 as u32);
    let deny = op(
        BPF_RET_K,
        libc::SECCOMP_RET_ERRNO | (errno & libc::SECCOMP_RET_DATA),
    );
    let allow = op(BPF_RET_K, libc::SECCOMP_RET_ALLOW);
    let mut prog = vec![op(BPF_LD_W_ABS, SECCOMP_DATA_ARCH)];
    let x32 = cfg!(target_arch = "x86_64");
    // Another architecture: to `allow`, past the number load and the tests.
    let tests: u8 = if x32 { 2 } else { 1 };
    prog.push(jump(BPF_JMP_JEQ_K, arch, 0, 1 + tests));
    prog.push(op(BPF_LD_W_ABS, SECCOMP_DATA_NR));
    if x32 {
        // To `deny`, past the clone3 test and `allow`.
        prog.push(jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 2, 0));
    }
    prog.push(jump(BPF_JMP_JEQ_K, clone3, 1, 0));
    prog.push(allow);
    prog.push(deny);
    Some(prog)
}

/// The number of threads of this process (`Threads:` in /proc/self/status).
fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_name_the_programs_and_files_the_configuration_names() {
        let cfg = crate::cli::parse(
            [
                "clsync",
                "--ssh-command",
                "/opt/bin/ssh-wrap",
                "--exit-hook",
                "/opt/bin/hook",
                "--dump-dir",
                "/run/dump",
                "/srv/src",
                "host:/srv/dst",
                "/srv/dst2",
            ]
            .iter()
            .map(std::ffi::OsString::from)
            .collect::<Vec<_>>(),
        )
        .unwrap();
        let g = Grants::for_worker(
            &cfg,
            Path::new("/srv/src"),
            Path::new("/usr/bin/rsync"),
            Path::new("/tmp/lists.x"),
            Some(Path::new("/tmp/ssh.y")),
        );
        for p in ["/opt/bin/ssh-wrap", "/opt/bin/hook", "/usr/bin/rsync"] {
            assert!(g.exec.contains(&PathBuf::from(p)), "{p}: {g:?}");
        }
        for p in ["/srv/dst2", "/run/dump", "/tmp/lists.x", "/tmp/ssh.y"] {
            assert!(g.write.contains(&PathBuf::from(p)), "{p}: {g:?}");
        }
        assert!(g.read.contains(&PathBuf::from("/srv/src")));
        assert!(!g.write.iter().any(|p| p.starts_with("/srv/src")), "{g:?}");
        assert!(!g.read.iter().any(|p| p == Path::new("/etc")), "{g:?}");
        assert_eq!(g.remove_dir, [PathBuf::from("/tmp"), PathBuf::from("/tmp")]);
        assert!(!g.local_only, "a destination is remote");
        // ssh's own configuration, read only; no directory of ssh's is writable.
        assert!(g.read.contains(&PathBuf::from("/etc/ssh/ssh_config")));
        assert!(g.read.iter().any(|p| p.ends_with(".ssh")), "{g:?}");
        assert!(
            !g.write
                .iter()
                .any(|p| p.ends_with(".ssh") || p.is_dir() && p.join(".ssh").exists()),
            "{g:?}"
        );
        let local =
            crate::cli::parse(["clsync", "/srv/src", "/srv/dst"].map(std::ffi::OsString::from))
                .unwrap();
        let g = Grants::for_worker(
            &local,
            Path::new("/srv/src"),
            Path::new("/usr/bin/rsync"),
            Path::new("/tmp/lists.x"),
            None,
        );
        assert!(
            !g.read
                .iter()
                .any(|p| p.starts_with("/etc/ssh") || p.ends_with(".ssh")),
            "{g:?}"
        );
    }

    /// The files named in the ssh settings, in each way ssh takes them, are granted: keys
    /// (with their public keys and certificates) and configuration read, known-hosts
    /// files that exist read and write as files; `~/` and `%d` are the home.
    #[test]
    fn ssh_settings_name_the_files_ssh_reads_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::write(home.join(".ssh/known_hosts"), b"").unwrap();
        let kh = dir.path().join("kh");
        std::fs::write(&kh, b"").unwrap();
        let missing = dir.path().join("missing");
        let ssh = crate::dest::Ssh {
            identity: Some("/keys/id".into()),
            options: [
                "-o",
                "IdentityFile=/keys/two",
                "-oCertificateFile ~/cert",
                "-F",
                "/etc/alt_config",
                "-o",
                &format!(
                    "UserKnownHostsFile = {} {}",
                    kh.display(),
                    missing.display()
                ),
                "-oGlobalKnownHostsFile=/g/kh1 /g/kh2",
                "-i%d/.ssh/id_x",
                "-oidentityfile=/keys/%h",
                "-oLogLevel=ERROR",
                "-p",
                "22",
            ]
            .map(String::from)
            .to_vec(),
            ..crate::dest::Ssh::default()
        };
        let f = SshFiles::of(&ssh, std::slice::from_ref(&home));
        let home_s = home.display().to_string();
        let read: Vec<String> = f.read.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            read,
            [
                "/keys/id".to_string(),
                "/keys/id.pub".into(),
                "/keys/id-cert.pub".into(),
                "/keys/two".into(),
                "/keys/two.pub".into(),
                "/keys/two-cert.pub".into(),
                format!("{home_s}/cert"),
                "/etc/alt_config".into(),
                "/g/kh1".into(),
                "/g/kh2".into(),
                format!("{home_s}/.ssh/id_x"),
                format!("{home_s}/.ssh/id_x.pub"),
                format!("{home_s}/.ssh/id_x-cert.pub"),
            ]
        );
        assert_eq!(
            f.write,
            [kh],
            "the known-hosts file that exists, not the home's"
        );
        // Without UserKnownHostsFile: the home's known_hosts (a file), never ~/.ssh.
        let f = SshFiles::of(&crate::dest::Ssh::default(), std::slice::from_ref(&home));
        assert_eq!(f.write, [home.join(".ssh/known_hosts")]);
        assert_eq!(split_option("Key=v w"), ("Key", "v w"));
        assert_eq!(split_option("Key = v"), ("Key", "v"));
        assert_eq!(split_option("Key v"), ("Key", "v"));
    }

    /// The network and CAP_SYS_ADMIN decisions from the settings: auto takes a private
    /// network for local destinations only, host never (and then allows network
    /// sockets), private always; SYS_ADMIN stays for a site handler or rsync copying
    /// xattrs.
    #[test]
    fn grants_decide_the_network_and_sys_admin() {
        let grants = |args: &[&str]| {
            let mut argv = vec!["clsync"];
            argv.extend(args);
            let cfg = crate::cli::parse(
                argv.iter()
                    .map(std::ffi::OsString::from)
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            let g = Grants::for_worker(
                &cfg,
                Path::new("/srv/src"),
                Path::new("/usr/bin/rsync"),
                Path::new("/tmp/lists.x"),
                None,
            );
            (
                g.private_network,
                g.local_only,
                g.network_required,
                g.sys_admin,
            )
        };
        assert_eq!(
            grants(&["/srv/src", "/srv/dst"]),
            (true, true, false, false)
        );
        assert_eq!(
            grants(&["--sandbox-network=host", "/srv/src", "/srv/dst"]),
            (false, false, false, false)
        );
        assert_eq!(
            grants(&["--sandbox-network=private", "/srv/src", "/srv/dst"]),
            (true, true, true, false)
        );
        assert_eq!(
            grants(&["/srv/src", "host:/srv/dst"]),
            (false, false, false, false)
        );
        assert!(
            grants(&["--rsync-option=-aHAX", "/srv/src", "/srv/dst"]).3,
            "rsync copies xattrs"
        );
        assert!(
            grants(&[
                "-M",
                "shell",
                "-S",
                "/bin/true",
                "-W",
                "/srv/src",
                "-D",
                "/srv/dst"
            ])
            .3,
            "a site handler"
        );
    }

    #[test]
    fn filter_compiles_and_lists_no_call_twice() {
        let calls = denied_calls();
        let mut sorted = calls.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), calls.len());
        assert!(!calls.contains(&libc::SYS_open_by_handle_at));
        assert!(seccomp_filter(true).unwrap().is_some());
    }

    /// In a forked child: after `enforce`, writing outside the grants, reading an
    /// ungranted file and mount(2) fail; writing inside works.
    #[test]
    fn enforce_confines_a_forked_child() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("in");
        let outside = dir.path().join("out");
        std::fs::create_dir(&inside).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();
        let g = Grants {
            local_only: true,
            write: vec![inside.clone()],
            exec: SYSTEM_DIRS.iter().map(PathBuf::from).collect(),
            ..Grants::default()
        };
        let code = in_child(|| {
            (|| {
                let sb = Sandbox::prepare(&g).ok()?;
                // A forked child of the test harness has one thread.
                let done = sb.enforce().ok()?;
                if done.landlock != "full" {
                    return Some(10);
                }
                let denied = |r: std::io::Result<()>| {
                    r.is_err_and(|e| e.raw_os_error() == Some(libc::EACCES))
                };
                if std::fs::write(inside.join("ok"), b"x").is_err() {
                    return Some(11);
                }
                if !denied(std::fs::write(outside.join("f"), b"x")) {
                    return Some(12);
                }
                if !denied(std::fs::read(outside.join("secret")).map(|_| ())) {
                    return Some(13);
                }
                let target = std::ffi::CString::new(inside.as_os_str().as_encoded_bytes()).ok()?;
                // SAFETY: valid NUL-terminated strings and a null data pointer.
                let m = unsafe {
                    libc::mount(
                        c"none".as_ptr(),
                        target.as_ptr(),
                        c"tmpfs".as_ptr(),
                        0,
                        std::ptr::null(),
                    )
                };
                if m != -1 || nix::errno::Errno::last() != nix::errno::Errno::EPERM {
                    return Some(14);
                }
                let tcp = std::net::TcpListener::bind("127.0.0.1:0");
                if !tcp.is_err_and(|e| e.raw_os_error() == Some(libc::EPERM)) {
                    return Some(15);
                }
                if std::os::unix::net::UnixDatagram::unbound().is_err() {
                    return Some(16);
                }
                Some(0)
            })()
            .unwrap_or(9)
        });
        assert_eq!(code, 0, "the check that failed in the confined child");
    }

    /// Runs `f` in a forked child and returns its exit code.
    fn in_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child leaves with _exit and touches none of the state of the test
        // harness's other threads; it may allocate and start a thread or a process:
        // glibc's fork leaves malloc's locks usable in the child.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = f();
                // SAFETY: leaves the forked child without running the parent's atexit work.
                unsafe { libc::_exit(code) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                match nix::sys::wait::waitpid(child, None).unwrap() {
                    nix::sys::wait::WaitStatus::Exited(_, code) => code,
                    other => panic!("child: {other:?}"),
                }
            }
        }
    }

    /// The errno of a raw system call with no arguments that fails (0 if it worked).
    fn errno_of(nr: libc::c_long, a0: libc::c_long, a1: libc::c_long) -> i32 {
        // SAFETY: the calls made here take integers or a null pointer with size 0.
        let r = unsafe { libc::syscall(nr, a0, a1) };
        if r == -1 {
            nix::errno::Errno::last_raw()
        } else {
            0
        }
    }

    /// The second filter: clone3 gives ENOSYS (the kernel itself says EINVAL for a null
    /// argument of size 0), and on x86_64 an x32 call gives the filter's errno (EPERM
    /// here, to tell it from a kernel without x32, which says ENOSYS by itself), while
    /// the same call in the x86_64 numbering and the number just below the x32 bit are
    /// the kernel's.
    #[test]
    fn fallback_filter_refuses_clone3_and_x32_calls() {
        let code = in_child(|| {
            if errno_of(libc::SYS_clone3, 0, 0) != libc::EINVAL {
                return 10;
            }
            let Some(prog) = fallback_filter(libc::ENOSYS) else {
                return 0;
            };
            if seccompiler::apply_filter(&prog).is_err() {
                return 11;
            }
            if errno_of(libc::SYS_clone3, 0, 0) != libc::ENOSYS {
                return 12;
            }
            if errno_of(libc::SYS_getpid, 0, 0) != 0 {
                return 13;
            }
            // Threads start through clone3 in glibc: the fallback to clone works.
            if std::thread::spawn(|| 7).join().ok() != Some(7) {
                return 14;
            }
            0
        });
        assert_eq!(code, 0);
        #[cfg(target_arch = "x86_64")]
        {
            let code = in_child(|| {
                let Some(prog) = fallback_filter(libc::EPERM) else {
                    return 20;
                };
                if seccompiler::apply_filter(&prog).is_err() {
                    return 21;
                }
                let x32_getpid = libc::c_long::from(X32_SYSCALL_BIT) | libc::SYS_getpid;
                if errno_of(x32_getpid, 0, 0) != libc::EPERM {
                    return 22;
                }
                if errno_of(libc::SYS_getpid, 0, 0) != 0 {
                    return 23;
                }
                let below = libc::c_long::from(X32_SYSCALL_BIT) - 1;
                if errno_of(below, 0, 0) != libc::ENOSYS {
                    return 24;
                }
                0
            });
            assert_eq!(code, 0);
        }
    }

    /// The first filter refuses clone with a CLONE_NEW* flag (the fallback for clone3);
    /// a plain fork still works.
    #[test]
    fn filter_refuses_clone_into_new_namespaces() {
        let code = in_child(|| {
            let Ok(Some(prog)) = seccomp_filter(false) else {
                return 10;
            };
            if nix::sys::prctl::set_no_new_privs().is_err()
                || seccompiler::apply_filter(&prog).is_err()
            {
                return 11;
            }
            let flags = libc::c_long::from(libc::CLONE_NEWUTS | libc::SIGCHLD);
            if errno_of(libc::SYS_clone, flags, 0) != libc::EPERM {
                return 12;
            }
            match std::process::Command::new("/bin/true").status() {
                Ok(st) if st.success() => 0,
                _ => 13,
            }
        });
        assert_eq!(code, 0);
    }

    /// The capability sets of this process, from /proc/self/status (hex masks).
    fn cap_masks() -> BTreeMap<String, u64> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.starts_with("Cap")
                    .then(|| Some((k.to_string(), u64::from_str_radix(v.trim(), 16).ok()?)))?
            })
            .collect()
    }

    /// `isolate` as root: the bounding set is cut to the kept capabilities (SYS_ADMIN
    /// only when asked), the inheritable and ambient sets are empty, and the worker is
    /// in new IPC, UTS and (when asked) network namespaces.
    #[test]
    fn isolate_cuts_capabilities_and_takes_namespaces() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: cutting capabilities needs root");
            return;
        }
        let ns = |n: &str| std::fs::read_link(format!("/proc/self/ns/{n}")).unwrap();
        let (net, ipc) = (ns("net"), ns("ipc"));
        let mask = |caps: &[Capability]| caps.iter().fold(0u64, |m, c| m | c.bitmask());
        for sys_admin in [false, true] {
            let (net, ipc) = (net.clone(), ipc.clone());
            let code = in_child(move || {
                let g = Grants {
                    private_network: !sys_admin,
                    sys_admin,
                    ..Grants::default()
                };
                let Ok(mut sb) = Sandbox::prepare(&g) else {
                    return 10;
                };
                let had = cap_masks()["CapPrm"];
                if let Err(e) = sb.isolate() {
                    eprintln!("isolate: {e}");
                    return 11;
                }
                let mut kept = KEPT_CAPS.to_vec();
                if sys_admin {
                    kept.push(Capability::CAP_SYS_ADMIN);
                }
                kept.retain(|c| had & c.bitmask() != 0);
                let m = cap_masks();
                if m["CapBnd"] != mask(&kept) {
                    return 12;
                }
                if m["CapPrm"] != mask(&kept) || m["CapEff"] != mask(&kept) {
                    return 13;
                }
                if m["CapInh"] != 0 || m["CapAmb"] != 0 {
                    return 14;
                }
                // A private network exactly when asked (here: without sys_admin).
                let same_net = ns("net") == net;
                if ns("ipc") == ipc || same_net != sys_admin {
                    return 15;
                }
                let want: &[&str] = if sys_admin {
                    &["ipc", "uts"]
                } else {
                    &["net", "ipc", "uts"]
                };
                if sb.namespaces != want {
                    return 16;
                }
                0
            });
            assert_eq!(code, 0, "sys_admin {sys_admin}");
        }
    }

    #[test]
    fn preserved_capabilities_are_the_originals_four_by_name() {
        assert_eq!(
            parse_preserved("CAP_DAC_READ_SEARCH, kill,cap_setuid,,CAP_KILL").unwrap(),
            [
                Capability::CAP_DAC_READ_SEARCH,
                Capability::CAP_KILL,
                Capability::CAP_SETUID
            ]
        );
        assert_eq!(parse_preserved("").unwrap(), []);
        let e = parse_preserved("CAP_SETUID,CAP_SYS_ADMIN").unwrap_err();
        assert!(e.starts_with("CAP_SYS_ADMIN cannot be kept"), "{e}");
        let e = parse_preserved("CAP_FLY").unwrap_err();
        assert!(e.contains("\"CAP_FLY\" is not a capability"), "{e}");
        assert_eq!("permittied".parse(), Ok(Inherit::Permitted));
        assert!("all".parse::<Inherit>().is_err());
    }

    #[test]
    fn xattr_options_are_found_in_bundles() {
        let has =
            |a: &[&str]| copies_xattrs(&a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>());
        assert!(has(&["-aHAX"]));
        assert!(has(&["--xattrs"]));
        assert!(has(&["-X"]));
        assert!(!has(&["-aH", "--exclude=X", "--delete"]));
    }
}
