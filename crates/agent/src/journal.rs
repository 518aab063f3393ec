//! Persistence of the objects the agent holds in large numbers (Services, EndpointSlices,
//! pools): an append-only journal of changes plus a snapshot it is compacted into now and then.
//! Persisting one change costs one small append, whatever the number of objects (a file per
//! object cost a create and a rename on every change, over a millisecond on a journaling disk).
//! A crash can cut the last line short; replay ignores a line that does not parse.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use plexus_api::ObjectRef;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    /// Objects created or replaced.
    Apply(Vec<Value>),
    /// Objects deleted.
    Delete(Vec<ObjectRef>),
}

/// Identity of a persisted object: (kind, namespace, name).
type Key = (String, String, String);

/// Kinds without a namespace.
fn cluster_scoped(kind: &str) -> bool {
    kind == "CiliumLoadBalancerIPPool"
}

fn key_of_value(v: &Value) -> Key {
    let kind = v["kind"].as_str().unwrap_or_default().to_string();
    let ns = if cluster_scoped(&kind) {
        String::new()
    } else {
        v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    };
    let name = v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (kind, ns, name)
}

fn key_of_ref(r: &ObjectRef) -> Key {
    let ns = if cluster_scoped(&r.kind) {
        String::new()
    } else {
        r.namespace.clone().unwrap_or_else(|| "default".into())
    };
    (r.kind.clone(), ns, r.name.clone())
}

/// The journal and snapshot of one directory.
pub struct Journal {
    dir: PathBuf,
    file: File,
    lines: usize,
}

impl Journal {
    fn journal_path(dir: &Path) -> PathBuf {
        dir.join("journal.jsonl")
    }

    fn snapshot_path(dir: &Path) -> PathBuf {
        dir.join("snapshot.json")
    }

    /// Opens the journal in `dir` and replays it: the objects in force, in a stable order.
    pub fn open(dir: &Path) -> anyhow::Result<(Self, Vec<Value>)> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut objects: BTreeMap<Key, Value> = BTreeMap::new();
        let snap = Self::snapshot_path(dir);
        match fs::read(&snap) {
            Ok(b) => {
                let list: Vec<Value> = serde_json::from_slice(&b)
                    .with_context(|| format!("parsing {}", snap.display()))?;
                for v in list {
                    objects.insert(key_of_value(&v), v);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", snap.display())),
        }
        let path = Self::journal_path(dir);
        let mut lines = 0;
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let line = line.with_context(|| format!("reading {}", path.display()))?;
                match serde_json::from_str::<Entry>(&line) {
                    Ok(Entry::Apply(vs)) => {
                        for v in vs {
                            objects.insert(key_of_value(&v), v);
                        }
                    }
                    Ok(Entry::Delete(refs)) => {
                        for r in refs {
                            objects.remove(&key_of_ref(&r));
                        }
                    }
                    Err(e) => {
                        warn!(file = %path.display(), error = %e, "skipping a cut-off journal line")
                    }
                }
                lines += 1;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                file,
                lines,
            },
            objects.into_values().collect(),
        ))
    }

    /// Appends one change (one write, no fsync: the agent crashing is what this guards
    /// against; a node reboot loses the pinned datapath too, and its sources send it again).
    pub fn append(&mut self, e: &Entry) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(e)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .with_context(|| format!("appending to {}", Self::journal_path(&self.dir).display()))?;
        self.lines += 1;
        Ok(())
    }

    /// Lines since the last snapshot.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Writes `objects` as the new snapshot and starts an empty journal (snapshot first, by
    /// rename: a crash in between replays the old journal over the new snapshot, which
    /// gives the same objects).
    pub fn compact(&mut self, objects: &[Value]) -> anyhow::Result<()> {
        let snap = Self::snapshot_path(&self.dir);
        let tmp = snap.with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec(objects)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &snap).with_context(|| format!("renaming to {}", snap.display()))?;
        let path = Self::journal_path(&self.dir);
        let fresh = path.with_extension("tmp");
        File::create(&fresh).with_context(|| format!("creating {}", fresh.display()))?;
        fs::rename(&fresh, &path).with_context(|| format!("renaming to {}", path.display()))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        self.lines = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, port: u16) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": "x"}, "spec": {"ports": [{"port": port}]}})
    }

    #[test]
    fn replay_gives_the_objects_in_force_also_across_compaction_and_a_cut_line() {
        let dir = std::env::temp_dir().join(format!("plexus-journal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (mut j, objs) = Journal::open(&dir).unwrap();
        assert!(objs.is_empty());
        j.append(&Entry::Apply(vec![svc("a", 1), svc("b", 2)]))
            .unwrap();
        j.append(&Entry::Apply(vec![svc("a", 3)])).unwrap();
        let gone = ObjectRef {
            kind: "Service".into(),
            namespace: Some("x".into()),
            name: "b".into(),
        };
        j.append(&Entry::Delete(vec![gone])).unwrap();
        drop(j);
        let (mut j, objs) = Journal::open(&dir).unwrap();
        assert_eq!(objs, vec![svc("a", 3)]);
        j.compact(&objs).unwrap();
        j.append(&Entry::Apply(vec![svc("c", 4)])).unwrap();
        drop(j);
        // A crash mid-append leaves half a line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(Journal::journal_path(&dir))
            .unwrap();
        f.write_all(b"{\"apply\":[{\"kind\"").unwrap();
        let (_, objs) = Journal::open(&dir).unwrap();
        assert_eq!(objs, vec![svc("a", 3), svc("c", 4)]);
        let _ = fs::remove_dir_all(&dir);
    }
}
