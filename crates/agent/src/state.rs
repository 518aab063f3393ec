//! The agent's persisted state: IPAM and endpoints, written atomically after every change.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;
use plexus_api::{Attachment, Endpoint};
use plexus_identity::{Allocator, Labels};
use plexus_ipam::Ipam;

use crate::objects::Objects;
use serde::{Deserialize, Serialize};

/// Everything the agent must not forget across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Address allocations.
    pub ipam: Ipam,
    /// Endpoints by attachment.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Kubernetes objects in force (namespaces, pods, policies).
    #[serde(default)]
    pub objects: Objects,
    /// Identity allocations (stable numbers across restarts).
    #[serde(default = "Allocator::new")]
    pub identities: Allocator,
    /// Identity labels each endpoint holds a reference for, by attachment key.
    #[serde(default)]
    pub endpoint_labels: BTreeMap<String, Labels>,
    /// Numeric ids of policy rules (by origin), carried in policy map values.
    #[serde(default)]
    pub rule_ids: BTreeMap<String, u32>,
}

impl State {
    /// A fresh state.
    pub fn new(ipam: Ipam) -> Self {
        Self {
            ipam,
            endpoints: BTreeMap::new(),
            objects: Objects::default(),
            identities: Allocator::new(),
            endpoint_labels: BTreeMap::new(),
            rule_ids: BTreeMap::new(),
        }
    }

    /// Key of an attachment in the endpoints table.
    pub fn key(a: &Attachment) -> String {
        a.owner()
    }
}

/// Where the state lives, and atomic load/store.
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The store in `dir` (created if missing).
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating state dir {}", dir.display()))?;
        Ok(Self {
            path: dir.join("state.json"),
        })
    }

    /// The saved state, if any.
    pub fn load(&self) -> anyhow::Result<Option<State>> {
        match fs::read(&self.path) {
            Ok(b) => {
                Ok(Some(serde_json::from_slice(&b).with_context(|| {
                    format!("parsing {}", self.path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// Writes the state: temp file, fsync, rename, so a crash leaves the old or the new state.
    pub fn save(&self, s: &State) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(s)?;
        let mut f = fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&data)?;
        f.sync_all()?;
        fs::rename(&tmp, &self.path)
            .with_context(|| format!("renaming to {}", self.path.display()))?;
        Ok(())
    }
}
