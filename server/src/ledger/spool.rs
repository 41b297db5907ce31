//! The local spool: every spend record is appended to a file before its response completes,
//! so a killed process loses none. The writer reports how far the store has caught up, and
//! segments wholly stored are deleted; at start, whatever a previous process left is replayed
//! (the store skips records it already has, by request id).
//!
//! Records are JSON lines in numbered segment files (`segment-<n>.jsonl`) under one directory,
//! guarded by an exclusive lock on `LOCK` so two processes never share a spool. A write reaches
//! the kernel before `append` returns (no fsync: a process kill loses nothing, a machine crash
//! may lose the last moments).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::store::SpendRecord;

/// A segment is sealed and a new one started past this size.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(
        "spool directory {0} is in use by another ferryman process; give each process its own general_settings.spool_dir"
    )]
    Locked(String),
}

fn io(path: &Path, source: std::io::Error) -> SpoolError {
    SpoolError::Io { path: path.display().to_string(), source }
}

struct Segment {
    id: u64,
    file: File,
    bytes: u64,
    /// The sequence number of the last record written to it.
    last_seq: u64,
}

struct Inner {
    current: Segment,
    /// Sealed segments and the last sequence number each holds, oldest first.
    sealed: VecDeque<(u64, u64)>,
    next_seq: u64,
}

/// An open spool; see the module docs.
pub struct Spool {
    dir: PathBuf,
    inner: Mutex<Inner>,
    _lock: File,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("segment-{id:012}.jsonl"))
}

fn segment_ids(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(id) =
            name.strip_prefix("segment-").and_then(|n| n.strip_suffix(".jsonl")).and_then(|n| n.parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Records left over by a previous process, to replay, and the files they came from.
pub struct Leftovers {
    pub records: Vec<SpendRecord>,
    pub files: Vec<PathBuf>,
}

impl Spool {
    /// Opens (creating) the spool directory, takes its lock, and returns what a previous
    /// process left. The caller stores the leftovers, then calls [`Spool::discard`] on them.
    pub fn open(dir: &Path) -> Result<(Spool, Leftovers), SpoolError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| io(dir, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked(dir.display().to_string())),
            Err(fs::TryLockError::Error(e)) => return Err(io(dir, e)),
        }

        let ids = segment_ids(dir)?;
        let mut records = Vec::new();
        let mut files = Vec::new();
        for id in &ids {
            let path = segment_path(dir, *id);
            let file = File::open(&path).map_err(|e| io(dir, e))?;
            for line in BufReader::new(file).lines() {
                let line = line.map_err(|e| io(dir, e))?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<SpendRecord>(&line) {
                    Ok(r) => records.push(r),
                    // Only a write torn by a kill can end a segment early; nothing after it.
                    Err(e) => tracing::warn!(file = %path.display(), error = %e, "skipping a torn spool line"),
                }
            }
            files.push(path);
        }
        let id = ids.last().map_or(1, |last| last + 1);
        let current = Self::new_segment(dir, id)?;
        let spool = Spool {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner { current, sealed: VecDeque::new(), next_seq: 1 }),
            _lock: lock,
        };
        Ok((spool, Leftovers { records, files }))
    }

    fn new_segment(dir: &Path, id: u64) -> Result<Segment, SpoolError> {
        let path = segment_path(dir, id);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io(dir, e))?;
        Ok(Segment { id, file, bytes: 0, last_seq: 0 })
    }

    /// Deletes replayed files once their records are stored.
    pub fn discard(&self, files: &[PathBuf]) {
        for f in files {
            if let Err(e) = fs::remove_file(f) {
                tracing::warn!(file = %f.display(), error = %e, "cannot delete a replayed spool segment");
            }
        }
    }

    /// Appends a record and, still holding the spool's lock, hands its sequence number to
    /// `then` (so records reach the writer in sequence order). The bytes are in the kernel
    /// when this returns.
    pub fn append(&self, record: &SpendRecord, then: impl FnOnce(u64)) -> Result<u64, SpoolError> {
        let mut line = serde_json::to_vec(record).map_err(|e| io(&self.dir, std::io::Error::other(e)))?;
        line.push(b'\n');
        let mut inner = self.inner.lock().map_err(|_| io(&self.dir, std::io::Error::other("spool lock poisoned")))?;
        if inner.current.bytes >= SEGMENT_BYTES {
            let next = Self::new_segment(&self.dir, inner.current.id + 1)?;
            let sealed = std::mem::replace(&mut inner.current, next);
            inner.sealed.push_back((sealed.id, sealed.last_seq));
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.current.file.write_all(&line).map_err(|e| io(&self.dir, e))?;
        inner.current.bytes += line.len() as u64;
        inner.current.last_seq = seq;
        then(seq);
        Ok(seq)
    }

    /// Keeps a record the database refuses, for an operator to look at (`parked.jsonl`; never
    /// replayed automatically).
    pub fn park(&self, record: &SpendRecord) {
        let path = self.dir.join("parked.jsonl");
        let line = serde_json::to_string(record).unwrap_or_default();
        let written = OpenOptions::new().create(true).append(true).open(&path).and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            tracing::error!(error = %e, request_id = %record.request_id, "cannot park a refused spend record");
        }
    }

    /// Every record up to `seq` is stored: drop the segments that hold only such records.
    pub fn stored_through(&self, seq: u64) {
        let Ok(mut inner) = self.inner.lock() else { return };
        while let Some(&(id, last)) = inner.sealed.front() {
            if last > seq {
                break;
            }
            inner.sealed.pop_front();
            let _ = fs::remove_file(segment_path(&self.dir, id));
        }
        if inner.current.bytes > 0 && inner.current.last_seq <= seq {
            // Everything in the current segment is stored: start it over.
            match inner.current.file.set_len(0) {
                Ok(()) => inner.current.bytes = 0,
                Err(e) => tracing::warn!(error = %e, "cannot truncate the spool segment"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::Nanos;
    use crate::store::SpendStatus;

    fn record(id: &str) -> SpendRecord {
        let now = chrono::Utc::now();
        SpendRecord {
            request_id: id.into(),
            call_type: "chat_completion".into(),
            key_id: "k".into(),
            model: "m".into(),
            deployment: "d".into(),
            provider: "mock".into(),
            prompt_tokens: 1,
            completion_tokens: 2,
            total_tokens: 3,
            spend: Nanos(42),
            status: SpendStatus::Success,
            error_code: None,
            start_time: now,
            end_time: now,
            duration_ms: 1,
            end_user: Some("u".into()),
            user_id: None,
            team_id: None,
            organization_id: None,
            tags: vec!["t".into()],
            charges: vec![crate::store::Charge { scope: "key".into(), scope_id: "k".into(), period_start_us: 0 }],
            cache_hit: false,
            metadata: None,
        }
    }

    fn temp_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("ferryman-spool-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn unstored_records_survive_a_restart_and_stored_ones_do_not() {
        let dir = temp_dir();
        {
            let (spool, left) = Spool::open(&dir).unwrap();
            assert!(left.records.is_empty());
            let a = spool.append(&record("a"), |_| ()).unwrap();
            spool.stored_through(a);
            spool.append(&record("b"), |_| ()).unwrap();
            spool.append(&record("c"), |_| ()).unwrap();
            // Dropped without storing b and c: as if the process were killed.
        }
        let (_spool, left) = Spool::open(&dir).unwrap();
        let ids: Vec<_> = left.records.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(left.records[0], record_like(&left.records[0], "b"));
        fs::remove_dir_all(dir).unwrap();
    }

    fn record_like(r: &SpendRecord, id: &str) -> SpendRecord {
        SpendRecord { start_time: r.start_time, end_time: r.end_time, ..record(id) }
    }

    #[test]
    fn a_second_process_cannot_share_the_spool() {
        let dir = temp_dir();
        let (_first, _) = Spool::open(&dir).unwrap();
        assert!(matches!(Spool::open(&dir), Err(SpoolError::Locked(_))));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn torn_last_lines_are_skipped() {
        let dir = temp_dir();
        fs::write(
            segment_path(&dir, 3),
            format!("{}\n{{\"request_id\": \"tor", serde_json::to_string(&record("x")).unwrap()),
        )
        .unwrap();
        let (spool, left) = Spool::open(&dir).unwrap();
        assert_eq!(left.records.len(), 1);
        spool.discard(&left.files);
        assert_eq!(segment_ids(&dir).unwrap(), vec![4], "the replayed segment is gone; the new one is next");
        fs::remove_dir_all(dir).unwrap();
    }
}
