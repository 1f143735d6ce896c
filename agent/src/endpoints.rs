//! The agent's two endpoints: who may open them and how many peers they serve.
//!
//! Without keys, an agent's control endpoint runs anything as the agent's user on
//! behalf of whoever can connect, so by default it is an `ipc://` socket that only
//! that user may open: in the runtime directory ([`default_runtime_dir`]), which the
//! agent makes mode 0700 (0750 with `control_group`), the socket files mode 0600
//! (0660, owned by that group). A TCP endpoint without keys is refused by the config
//! unless `insecure = true`, and then warned about at every start.
//!
//! [`default_runtime_dir`]: ringmaster_protocol::endpoint::default_runtime_dir

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context};
use ringmaster_protocol::endpoint::Endpoint;
use ringmaster_protocol::transport::Limits;
use tracing::warn;

use crate::config::AgentSettings;

/// Who may open the `ipc://` endpoints: the control group, if any, and the
/// modes of the socket files and of the runtime directory.
fn access(settings: &AgentSettings) -> (Option<u32>, u32, u32) {
    match settings.control_group.as_ref() {
        Some((_, gid)) => (Some(*gid), 0o660, 0o750),
        None => (None, 0o600, 0o700),
    }
}

/// The bounds and the access of both endpoints.
pub fn limits(settings: &AgentSettings) -> Limits {
    let (group, socket_mode, _) = access(settings);
    Limits {
        max_connections: settings.max_connections,
        max_connections_per_peer: settings.max_connections_per_peer,
        ipc_mode: Some(socket_mode),
        ipc_group: group,
    }
}

/// Makes the runtime directory of the default endpoints private before anything
/// binds in it: created if missing, owned by the agent's user, mode 0700 (0750 and
/// the control group's with `control_group`). A directory that someone else owns is
/// refused, since whoever owns it could replace the sockets.
pub fn prepare(settings: &AgentSettings) -> anyhow::Result<()> {
    if !settings.default_endpoints {
        return Ok(());
    }
    let Ok(Endpoint::Ipc(path)) = Endpoint::parse(&settings.control) else {
        return Ok(());
    };
    let Some(dir) = Path::new(&path).parent() else {
        return Ok(());
    };
    let (group, _, mode) = access(settings);
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let uid = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() {
        bail!(
            "{} is not a directory; remove it, or set [agent] control and pubsub",
            dir.display()
        );
    }
    if meta.uid() != uid {
        bail!(
            "{} belongs to uid {}, not to the agent's user (uid {uid}): whoever owns it \
             could replace the agent's sockets. Remove it, or set $RINGMASTER_RUNTIME_DIR \
             or [agent] control and pubsub",
            dir.display(),
            meta.uid()
        );
    }
    if let Some(gid) = group {
        nix::unistd::chown(dir, None, Some(nix::unistd::Gid::from_raw(gid)))
            .with_context(|| format!("cannot give {} to the control group", dir.display()))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    Ok(())
}

/// Warns, at every start, about endpoints that any local user (or any host) can
/// drive: TCP without keys, allowed by `insecure = true`.
pub fn warn_if_open(settings: &AgentSettings) {
    if settings.keys.is_some() {
        return;
    }
    for (what, endpoint) in [("control", &settings.control), ("pubsub", &settings.pubsub)] {
        let Ok(parsed) = Endpoint::parse(endpoint) else {
            continue;
        };
        if !parsed.is_tcp() {
            continue;
        }
        let who = if parsed.is_host_private() {
            "every local user"
        } else {
            "every host that can reach it"
        };
        warn!(
            "the {what} endpoint {endpoint} has no keys: {who} can {} (insecure = true); \
             give the agent an admin_key, or use its default ipc:// endpoints",
            if what == "control" {
                "run commands as this agent's user"
            } else {
                "read its events, statistics and output"
            }
        );
    }
}
