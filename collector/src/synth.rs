//! A synthetic node root for tests and benchmarks: a Kubernetes-like memory cgroup hierarchy
//! (v1 with the cgroupfs layout, or v2 with the systemd layout) and processes, with file
//! contents in the kernel's formats and numbers that obey the kernel's accounting identities
//! (v1: usage = total_cache + total_rss + kmem; v2: current = anon + file + kernel + sock; LRU
//! lists sum to the same). Node files are real captures (see `synth/PROVENANCE.md`).

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;
const V1_UNLIMITED: u64 = 9223372036854771712;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub version: Version,
    /// Memory cgroups to create, all levels included (at least ~10).
    pub cgroups: usize,
    pub processes: usize,
    pub seed: u64,
}

impl Spec {
    pub fn new(version: Version, cgroups: usize, processes: usize) -> Self {
        Spec {
            version,
            cgroups,
            processes,
            seed: 42,
        }
    }
}

/// What was generated, for tests to check a collection against.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub cgroups: usize,
    pub processes: usize,
    /// Host paths of the leaf (container) cgroups.
    pub containers: Vec<String>,
}

/// Memory of one cgroup itself (not its descendants), in bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    anon: u64,
    active_file: u64,
    inactive_file: u64,
    shmem: u64,
    dirty: u64,
    mapped: u64,
    slab_r: u64,
    slab_u: u64,
    stack: u64,
    pagetables: u64,
    sock: u64,
    anon_thp: u64,
}

impl Mem {
    fn file(&self) -> u64 {
        self.active_file + self.inactive_file + self.shmem
    }
    fn kernel(&self) -> u64 {
        self.slab_r + self.slab_u + self.stack + self.pagetables
    }
    fn add(&mut self, o: &Mem) {
        self.anon += o.anon;
        self.active_file += o.active_file;
        self.inactive_file += o.inactive_file;
        self.shmem += o.shmem;
        self.dirty += o.dirty;
        self.mapped += o.mapped;
        self.slab_r += o.slab_r;
        self.slab_u += o.slab_u;
        self.stack += o.stack;
        self.pagetables += o.pagetables;
        self.sock += o.sock;
        self.anon_thp += o.anon_thp;
    }
}

struct Node {
    /// Path below the hierarchy root, "" for the root.
    path: String,
    parent: Option<usize>,
    children: Vec<usize>,
    own: Mem,
    total: Mem,
    limit: Option<u64>,
    pids: Vec<u32>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic for a seed, good enough for plausible numbers.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn pages(&mut self, lo: u64, hi: u64) -> u64 {
        self.range(lo / PAGE, hi / PAGE) * PAGE
    }
    fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            let _ = write!(s, "{:016x}", self.next());
        }
        s.truncate(n);
        s
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

/// Writes a synthetic node under `root` (which should be empty).
pub fn generate(root: &Path, spec: &Spec) -> io::Result<Summary> {
    let mut rng = Rng(spec.seed.max(1));
    let (base, mut nodes, logs) = build_tree(spec, &mut rng);
    assign_processes(&mut nodes, spec.processes);
    for i in (0..nodes.len()).rev() {
        let mut t = nodes[i].own;
        for &c in &nodes[i].children {
            t.add(&nodes[c].total);
        }
        nodes[i].total = t;
    }
    write_node_files(root, spec, &base, nodes.len())?;
    let cg_root = root.join(base.trim_start_matches('/'));
    for (i, n) in nodes.iter().enumerate() {
        let dir = cg_root.join(&n.path);
        fs::create_dir_all(&dir)?;
        let files = match spec.version {
            Version::V1 => v1_files(&nodes, i),
            Version::V2 => v2_files(&nodes, i),
        };
        for (name, content) in files {
            fs::write(dir.join(name), content)?;
        }
    }
    for l in &logs {
        let p = root.join(l);
        if l.ends_with(".log") {
            fs::create_dir_all(p.parent().expect("log path has a parent"))?;
            fs::write(p, "")?;
        } else {
            fs::create_dir_all(p)?;
        }
    }
    let mut summary = Summary {
        cgroups: nodes.len(),
        processes: 0,
        containers: Vec::new(),
    };
    for n in nodes
        .iter()
        .filter(|n| n.children.is_empty() && !n.pids.is_empty())
    {
        summary.containers.push(format!("{base}/{}", n.path));
    }
    for n in &nodes {
        for &pid in &n.pids {
            write_process(
                root,
                spec,
                &n.path,
                pid,
                &n.own,
                n.pids.len() as u64,
                &mut rng,
            )?;
            summary.processes += 1;
        }
    }
    Ok(summary)
}

/// The hierarchy root, its cgroups, and the pod and container log paths to create.
fn build_tree(spec: &Spec, rng: &mut Rng) -> (String, Vec<Node>, Vec<String>) {
    let mut logs = Vec::new();
    let base = match spec.version {
        Version::V1 => "/sys/fs/cgroup/memory".to_string(),
        Version::V2 => "/sys/fs/cgroup".to_string(),
    };
    let mut nodes: Vec<Node> = Vec::new();
    let add =
        |nodes: &mut Vec<Node>, parent: Option<usize>, name: &str, own: Mem, limit: Option<u64>| {
            let path = match parent {
                None => String::new(),
                Some(p) if nodes[p].path.is_empty() => name.to_string(),
                Some(p) => format!("{}/{name}", nodes[p].path),
            };
            nodes.push(Node {
                path,
                parent,
                children: Vec::new(),
                own,
                total: Mem::default(),
                limit,
                pids: Vec::new(),
            });
            let i = nodes.len() - 1;
            if let Some(p) = parent {
                nodes[p].children.push(i);
            }
            i
        };
    let v2 = spec.version == Version::V2;
    let root = add(&mut nodes, None, "", Mem::default(), None);
    let system = add(&mut nodes, Some(root), "system.slice", Mem::default(), None);
    for svc in [
        "containerd.service",
        "kubelet.service",
        "systemd-journald.service",
    ] {
        let m = leaf_mem(rng, 32 * MIB, 256 * MIB);
        add(&mut nodes, Some(system), svc, m, None);
    }
    add(&mut nodes, Some(root), "user.slice", Mem::default(), None);
    let kubepods = add(
        &mut nodes,
        Some(root),
        if v2 { "kubepods.slice" } else { "kubepods" },
        Mem::default(),
        None,
    );
    let qos: Vec<(usize, &str)> = ["burstable", "besteffort"]
        .iter()
        .map(|q| {
            let name = if v2 {
                format!("kubepods-{q}.slice")
            } else {
                q.to_string()
            };
            (
                add(&mut nodes, Some(kubepods), &name, Mem::default(), None),
                *q,
            )
        })
        .collect();
    let mut pod_no = 0usize;
    while nodes.len() + 3 <= spec.cgroups.max(nodes.len() + 3) {
        let (qos_idx, q) = qos[pod_no % 2];
        let uid = format!(
            "{}-{}-{}-{}-{}",
            rng.hex(8),
            rng.hex(4),
            rng.hex(4),
            rng.hex(4),
            rng.hex(12)
        );
        let pod_name = if v2 {
            format!("kubepods-{q}-pod{}.slice", uid.replace('-', "_"))
        } else {
            format!("pod{uid}")
        };
        // Containers' memory first, so a limit can hold what the container uses: a real
        // kernel never lets usage pass an enforced limit.
        let kinds = ["pause", "app"];
        let mems: Vec<Mem> = kinds
            .iter()
            .map(|k| match *k {
                "pause" => leaf_mem(rng, 256 << 10, MIB),
                _ => leaf_mem(rng, 16 * MIB, 512 * MIB),
            })
            .collect();
        let limited = q == "burstable";
        let app_limit = limited.then(|| {
            let used = mems[1].anon + mems[1].file() + mems[1].kernel() + mems[1].sock;
            (rng.range(2, 16) * 128 * MIB).max((used * 5 / 4).div_ceil(128 * MIB) * 128 * MIB)
        });
        let pod_own = Mem {
            shmem: if rng.chance(5) {
                rng.pages(MIB, 64 * MIB)
            } else {
                0
            },
            ..Mem::default()
        };
        let pod = add(
            &mut nodes,
            Some(qos_idx),
            &pod_name,
            pod_own,
            app_limit.map(|l| l + 128 * MIB),
        );
        let log_name = format!("app-{pod_no}");
        logs.push(format!("var/log/pods/default_{log_name}_{uid}/app"));
        for (kind, mem) in kinds.iter().zip(mems) {
            let id = rng.hex(64);
            if *kind == "app" {
                logs.push(format!(
                    "var/log/containers/{log_name}_default_app-{id}.log"
                ));
            }
            let name = if v2 {
                format!("cri-containerd-{id}.scope")
            } else {
                id
            };
            let limit = if *kind == "app" { app_limit } else { None };
            add(&mut nodes, Some(pod), &name, mem, limit);
        }
        pod_no += 1;
        if nodes.len() >= spec.cgroups {
            break;
        }
    }
    (base, nodes, logs)
}

fn leaf_mem(rng: &mut Rng, lo: u64, hi: u64) -> Mem {
    let anon = rng.pages(lo, hi);
    let file = rng.pages(lo / 4, hi / 2);
    let active_file = file / 3 / PAGE * PAGE;
    Mem {
        anon,
        active_file,
        inactive_file: file - active_file,
        shmem: if rng.chance(10) {
            rng.pages(MIB, 64 * MIB)
        } else {
            0
        },
        dirty: rng.pages(0, 256 << 10),
        mapped: rng.pages(0, file / 4),
        slab_r: rng.pages(64 << 10, 8 * MIB),
        slab_u: rng.pages(64 << 10, 2 * MIB),
        stack: rng.range(1, 64) * 16384,
        pagetables: rng.pages(16 << 10, 2 * MIB),
        sock: if rng.chance(20) {
            rng.pages(4096, MIB)
        } else {
            0
        },
        anon_thp: if rng.chance(30) {
            anon / (2 * MIB) * MIB
        } else {
            0
        },
    }
}

fn assign_processes(nodes: &mut [Node], processes: usize) {
    let leaves: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].children.is_empty() && nodes[i].own.anon > 0)
        .collect();
    if leaves.is_empty() {
        return;
    }
    for p in 0..processes {
        let leaf = leaves[p % leaves.len()];
        nodes[leaf].pids.push(1000 + p as u32);
    }
}

fn effective_limit(nodes: &[Node], mut i: usize) -> Option<u64> {
    let mut eff: Option<u64> = None;
    loop {
        if let Some(l) = nodes[i].limit {
            eff = Some(eff.map_or(l, |e| e.min(l)));
        }
        match nodes[i].parent {
            Some(p) => i = p,
            None => return eff,
        }
    }
}

fn procs(n: &Node) -> String {
    n.pids.iter().map(|p| format!("{p}\n")).collect()
}

fn v1_files(nodes: &[Node], i: usize) -> Vec<(&'static str, String)> {
    let n = &nodes[i];
    let (o, t) = (&n.own, &n.total);
    let hl = effective_limit(nodes, i).unwrap_or(V1_UNLIMITED);
    let mut stat = v1_stat_section("", o);
    let _ = writeln!(stat, "hierarchical_memory_limit {hl}");
    let _ = writeln!(stat, "hierarchical_memsw_limit {V1_UNLIMITED}");
    stat.push_str(&v1_stat_section("total_", t));
    let kmem = t.kernel();
    // The root's usage is computed from global counters and leaves kernel memory out.
    let usage = if n.parent.is_none() {
        t.anon + t.file()
    } else {
        t.anon + t.file() + kmem
    };
    let limit = n.limit.unwrap_or(V1_UNLIMITED);
    let pages = |b: u64| b / PAGE;
    let numa = format!(
        "total={} N0={}\nfile={} N0={}\nanon={} N0={}\nunevictable=0 N0=0\nhierarchical_total={} N0={}\nhierarchical_file={} N0={}\nhierarchical_anon={} N0={}\nhierarchical_unevictable=0 N0=0\n",
        pages(o.anon + o.file()), pages(o.anon + o.file()), pages(o.file()), pages(o.file()), pages(o.anon), pages(o.anon),
        pages(t.anon + t.file()), pages(t.anon + t.file()), pages(t.file()), pages(t.file()), pages(t.anon), pages(t.anon),
    );
    vec![
        ("cgroup.procs", procs(n)),
        ("memory.stat", stat),
        ("memory.usage_in_bytes", format!("{usage}\n")),
        ("memory.limit_in_bytes", format!("{limit}\n")),
        (
            "memory.max_usage_in_bytes",
            format!("{}\n", usage + usage / 8 / PAGE * PAGE),
        ),
        ("memory.failcnt", "0\n".into()),
        ("memory.soft_limit_in_bytes", format!("{V1_UNLIMITED}\n")),
        ("memory.memsw.usage_in_bytes", format!("{usage}\n")),
        ("memory.memsw.limit_in_bytes", format!("{V1_UNLIMITED}\n")),
        (
            "memory.memsw.max_usage_in_bytes",
            format!("{}\n", usage + usage / 8 / PAGE * PAGE),
        ),
        ("memory.memsw.failcnt", "0\n".into()),
        ("memory.kmem.usage_in_bytes", format!("{kmem}\n")),
        ("memory.kmem.limit_in_bytes", format!("{V1_UNLIMITED}\n")),
        ("memory.kmem.max_usage_in_bytes", format!("{}\n", kmem * 2)),
        ("memory.kmem.failcnt", "0\n".into()),
        ("memory.kmem.tcp.usage_in_bytes", format!("{}\n", t.sock)),
        (
            "memory.kmem.tcp.limit_in_bytes",
            format!("{V1_UNLIMITED}\n"),
        ),
        (
            "memory.kmem.tcp.max_usage_in_bytes",
            format!("{}\n", t.sock),
        ),
        ("memory.kmem.tcp.failcnt", "0\n".into()),
        (
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n".into(),
        ),
        ("memory.numa_stat", numa),
        ("memory.swappiness", "60\n".into()),
        ("memory.use_hierarchy", "1\n".into()),
        ("memory.move_charge_at_immigrate", "0\n".into()),
        // Write-only and deprecated files exist on real nodes; the collector must skip them.
        ("memory.force_empty", String::new()),
        ("cgroup.event_control", String::new()),
        ("memory.pressure_level", String::new()),
        ("notify_on_release", "0\n".into()),
        ("tasks", procs(n)),
    ]
}

/// One half of a v1 `memory.stat` (local or `total_`), in the kernel's order.
fn v1_stat_section(prefix: &str, m: &Mem) -> String {
    let cache = m.file();
    let kv: [(&str, u64); 20] = [
        ("cache", cache),
        ("rss", m.anon),
        ("rss_huge", m.anon_thp),
        ("shmem", m.shmem),
        ("mapped_file", m.mapped),
        ("dirty", m.dirty),
        ("writeback", 0),
        ("workingset_refault_anon", 0),
        ("workingset_refault_file", m.inactive_file / PAGE / 16),
        ("swap", 0),
        ("swapcached", 0),
        ("pgpgin", (m.anon + cache) / PAGE * 3),
        ("pgpgout", (m.anon + cache) / PAGE * 2),
        ("pgfault", m.anon / PAGE * 5),
        ("pgmajfault", m.inactive_file / PAGE / 100),
        // shmem sits on the anon LRU.
        ("inactive_anon", m.anon + m.shmem - m.anon / 2 / PAGE * PAGE),
        ("active_anon", m.anon / 2 / PAGE * PAGE),
        ("inactive_file", m.inactive_file),
        ("active_file", m.active_file),
        ("unevictable", 0),
    ];
    kv.iter()
        .map(|(k, v)| format!("{prefix}{k} {v}\n"))
        .collect()
}

fn v2_files(nodes: &[Node], i: usize) -> Vec<(&'static str, String)> {
    let n = &nodes[i];
    let t = &n.total;
    let file = t.file();
    let kernel = t.kernel();
    let current = t.anon + file + kernel + t.sock;
    let active_anon = t.anon / 2 / PAGE * PAGE;
    let kv: Vec<(&str, u64)> = vec![
        ("anon", t.anon),
        ("file", file),
        ("kernel", kernel),
        ("kernel_stack", t.stack),
        ("pagetables", t.pagetables),
        ("sec_pagetables", 0),
        ("percpu", 0),
        ("sock", t.sock),
        ("vmalloc", 0),
        ("shmem", t.shmem),
        ("zswap", 0),
        ("zswapped", 0),
        ("file_mapped", t.mapped),
        ("file_dirty", t.dirty),
        ("file_writeback", 0),
        ("swapcached", 0),
        ("anon_thp", t.anon_thp),
        ("file_thp", 0),
        ("shmem_thp", 0),
        ("inactive_anon", t.anon + t.shmem - active_anon),
        ("active_anon", active_anon),
        ("inactive_file", t.inactive_file),
        ("active_file", t.active_file),
        ("unevictable", 0),
        ("slab_reclaimable", t.slab_r),
        ("slab_unreclaimable", t.slab_u),
        ("slab", t.slab_r + t.slab_u),
        ("workingset_refault_anon", 0),
        ("workingset_refault_file", t.inactive_file / PAGE / 16),
        ("workingset_activate_anon", 0),
        ("workingset_activate_file", 0),
        ("workingset_restore_anon", 0),
        ("workingset_restore_file", 0),
        ("workingset_nodereclaim", 0),
        ("pgscan", 0),
        ("pgsteal", 0),
        ("pgfault", t.anon / PAGE * 5),
        ("pgmajfault", 0),
        ("pgrefill", 0),
        ("pgactivate", 0),
        ("pgdeactivate", 0),
        ("pglazyfree", 0),
        ("pglazyfreed", 0),
        ("thp_fault_alloc", t.anon_thp / (2 * MIB)),
        ("thp_collapse_alloc", 0),
    ];
    let stat: String = kv.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    let max = n.limit.map_or("max".to_string(), |l| l.to_string());
    let descendants = count_descendants(nodes, i);
    let pg = |b: u64| b;
    let mut files = vec![
        ("cgroup.procs", procs(n)),
        ("cgroup.stat", format!("nr_descendants {descendants}\nnr_dying_descendants 0\n")),
        ("cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n".into()),
        ("cgroup.subtree_control", if n.children.is_empty() { "\n".into() } else { "cpu io memory pids\n".into() }),
        ("cgroup.type", "domain\n".into()),
        ("memory.stat", stat),
        ("memory.numa_stat", format!("anon N0={}\nfile N0={}\nshmem N0={}\n", pg(t.anon), pg(file), pg(t.shmem))),
        ("memory.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=567\n".into()),
        ("memory.reclaim", String::new()),
    ];
    if n.parent.is_some() {
        files.extend([
            ("memory.current", format!("{current}\n")),
            (
                "memory.peak",
                format!("{}\n", current + current / 8 / PAGE * PAGE),
            ),
            ("memory.min", "0\n".into()),
            ("memory.low", "0\n".into()),
            ("memory.high", "max\n".into()),
            ("memory.max", format!("{max}\n")),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n".into(),
            ),
            (
                "memory.events.local",
                "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n".into(),
            ),
            ("memory.swap.current", "0\n".into()),
            ("memory.swap.max", "max\n".into()),
            ("memory.swap.high", "max\n".into()),
            ("memory.swap.peak", "0\n".into()),
            ("memory.swap.events", "high 0\nmax 0\nfail 0\n".into()),
            ("memory.zswap.current", "0\n".into()),
            ("memory.zswap.max", "max\n".into()),
            ("memory.oom.group", "0\n".into()),
        ]);
    }
    files
}

fn count_descendants(nodes: &[Node], i: usize) -> usize {
    nodes[i]
        .children
        .iter()
        .map(|&c| 1 + count_descendants(nodes, c))
        .sum()
}

fn write_node_files(root: &Path, spec: &Spec, base: &str, cgroups: usize) -> io::Result<()> {
    let w = |rel: &str, content: &str| -> io::Result<()> {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().expect("relative path has a parent"))?;
        fs::write(p, content)
    };
    w("proc/meminfo", include_str!("synth/meminfo"))?;
    w("proc/vmstat", include_str!("synth/vmstat"))?;
    w("proc/slabinfo", include_str!("synth/slabinfo"))?;
    w("proc/zoneinfo", include_str!("synth/zoneinfo"))?;
    w(
        "proc/sys/fs/dentry-state",
        include_str!("synth/dentry-state"),
    )?;
    w("proc/buddyinfo", "Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      2 \nNode 0, zone    DMA32    512    301    210    120     80     40     20     10      5      3    400 \n")?;
    w(
        "proc/swaps",
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
    )?;
    w(
        "proc/version",
        "Linux version 6.1.0-synthetic (memgap@synth) (gcc 12.2.0) #1 SMP PREEMPT_DYNAMIC\n",
    )?;
    w(
        "proc/cmdline",
        "BOOT_IMAGE=/vmlinuz root=/dev/vda ro psi=1\n",
    )?;
    w("proc/uptime", "123456.78 234567.89\n")?;
    w("proc/loadavg", "0.52 0.58 0.59 2/512 12345\n")?;
    w("proc/pressure/memory", "some avg10=0.00 avg60=0.00 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=23456\n")?;
    w("proc/sys/fs/inode-state", "123456\t2345\t0\t0\t0\t0\t0\n")?;
    w("proc/sys/fs/file-nr", "4096\t0\t9223372036854775807\n")?;
    w("proc/sysvipc/shm", "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n")?;
    w("proc/sysvipc/msg", "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime\n")?;
    w(
        "proc/sysvipc/sem",
        "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n",
    )?;
    w("proc/sys/kernel/hostname", "synth-node-1\n")?;
    w("proc/sys/kernel/osrelease", "6.1.0-synthetic\n")?;
    w("proc/sys/kernel/pid_max", "4194304\n")?;
    for (k, v) in [
        ("swappiness", "60"),
        ("overcommit_memory", "1"),
        ("min_free_kbytes", "67584"),
        ("vfs_cache_pressure", "100"),
        ("dirty_ratio", "20"),
        ("dirty_background_ratio", "10"),
        ("panic_on_oom", "0"),
    ] {
        w(&format!("proc/sys/vm/{k}"), &format!("{v}\n"))?;
    }
    // Write-only triggers exist on real nodes; the collector must never open them.
    w("proc/sys/vm/drop_caches", "")?;
    w("proc/sys/vm/compact_memory", "")?;
    let thp = "sys/kernel/mm/transparent_hugepage";
    w(&format!("{thp}/enabled"), "always [madvise] never\n")?;
    w(
        &format!("{thp}/defrag"),
        "always defer defer+madvise [madvise] never\n",
    )?;
    w(
        &format!("{thp}/shmem_enabled"),
        "always within_size advise [never] deny force\n",
    )?;
    w(&format!("{thp}/hpage_pmd_size"), "2097152\n")?;

    let mut mounts = String::from("sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\nproc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n");
    match spec.version {
        Version::V1 => {
            mounts.push_str("tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0\n");
            mounts.push_str(&format!(
                "cgroup {base} cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0\n"
            ));
            mounts.push_str("cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0\n");
        }
        Version::V2 => {
            mounts.push_str(&format!("cgroup2 {base} cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0\n"));
        }
    }
    let tmpfs = [
        "/dev/shm",
        "/run",
        "/var/lib/kubelet/pods/0b6f-cache/volumes/kubernetes.io~empty-dir/cache",
    ];
    for t in tmpfs {
        mounts.push_str(&format!(
            "tmpfs {t} tmpfs rw,nosuid,nodev,size=65536k 0 0\n"
        ));
        fs::create_dir_all(root.join(t.trim_start_matches('/')))?;
    }
    w("proc/mounts", &mounts)?;
    w(
        "proc/self/mountinfo",
        "22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n",
    )?;
    let cg = format!(
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t5\t47\t1\ncpu\t3\t172\t1\ncpuacct\t3\t172\t1\nmemory\t{}\t{cgroups}\t1\npids\t10\t170\t1\n",
        if spec.version == Version::V1 { 7 } else { 0 }
    );
    w("proc/cgroups", &cg)?;
    fs::create_dir_all(root.join("var/log/pods/kube-system_coredns-5d78c9869d-abcde_0b6f2f2e-1111-2222-3333-444455556666/coredns"))?;
    Ok(())
}

fn write_process(
    root: &Path,
    spec: &Spec,
    cg_path: &str,
    pid: u32,
    mem: &Mem,
    share: u64,
    rng: &mut Rng,
) -> io::Result<()> {
    let dir: PathBuf = root.join(format!("proc/{pid}"));
    fs::create_dir_all(&dir)?;
    let kb = |b: u64| b / 1024;
    let anon = mem.anon / share.max(1);
    let file = (mem.mapped / share.max(1)).max(4096 * 64);
    let shmem = mem.shmem / share.max(1);
    let rss = anon + file + shmem;
    let name = ["java", "python3", "nginx", "node", "envoy", "postgres"][pid as usize % 6];
    let status = format!(
        "Name:\t{name}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{pid}\nNgid:\t0\nPid:\t{pid}\nPPid:\t1\nTracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nFDSize:\t64\nGroups:\t\nNStgid:\t{pid}\t1\nNSpid:\t{pid}\t1\nNSpgid:\t{pid}\t1\nNSsid:\t{pid}\t1\nKthread:\t0\nVmPeak:\t{:>8} kB\nVmSize:\t{:>8} kB\nVmLck:\t       0 kB\nVmPin:\t       0 kB\nVmHWM:\t{:>8} kB\nVmRSS:\t{:>8} kB\nRssAnon:\t{:>8} kB\nRssFile:\t{:>8} kB\nRssShmem:\t{:>8} kB\nVmData:\t{:>8} kB\nVmStk:\t     132 kB\nVmExe:\t    4096 kB\nVmLib:\t   12288 kB\nVmPTE:\t{:>8} kB\nVmSwap:\t       0 kB\nHugetlbPages:\t       0 kB\nCoreDumping:\t0\nTHP_enabled:\t1\nThreads:\t{}\nSigQ:\t0/96365\nvoluntary_ctxt_switches:\t{}\nnonvoluntary_ctxt_switches:\t{}\n",
        kb(rss * 3), kb(rss * 2), kb(rss + rss / 10), kb(rss), kb(anon), kb(file), kb(shmem), kb(anon + 4096 * 1024), kb(mem.pagetables / share.max(1)).max(4),
        rng.range(1, 200), rng.range(100, 100000), rng.range(0, 1000),
    );
    let pss_file = file / 2;
    let smaps = format!(
        "55a0c0000000-7ffd00000000 ---p 00000000 00:00 0                          [rollup]\nRss:            {:>8} kB\nPss:            {:>8} kB\nPss_Dirty:      {:>8} kB\nPss_Anon:       {:>8} kB\nPss_File:       {:>8} kB\nPss_Shmem:      {:>8} kB\nShared_Clean:   {:>8} kB\nShared_Dirty:          0 kB\nPrivate_Clean:         0 kB\nPrivate_Dirty:  {:>8} kB\nReferenced:     {:>8} kB\nAnonymous:      {:>8} kB\nKSM:                   0 kB\nLazyFree:              0 kB\nAnonHugePages:  {:>8} kB\nShmemPmdMapped:        0 kB\nFilePmdMapped:         0 kB\nShared_Hugetlb:        0 kB\nPrivate_Hugetlb:       0 kB\nSwap:                  0 kB\nSwapPss:               0 kB\nLocked:                0 kB\n",
        kb(rss), kb(anon + pss_file + shmem), kb(anon + shmem), kb(anon), kb(pss_file), kb(shmem), kb(file), kb(anon + shmem), kb(rss), kb(anon), kb(mem.anon_thp / share.max(1)),
    );
    let cgroup = match spec.version {
        Version::V1 => format!("12:pids:/{cg_path}\n7:memory:/{cg_path}\n3:cpu,cpuacct:/{cg_path}\n1:name=systemd:/{cg_path}\n0::/\n"),
        Version::V2 => format!("0::/{cg_path}\n"),
    };
    let cmdline = format!(
        "/usr/bin/{name}\0--config=/etc/{name}/config.yaml\0--port={}\0",
        8000 + pid % 1000
    );
    let stat = format!("{pid} ({name}) S 1 {pid} {pid} 0 -1 4194560 {} 0 0 0 100 50 0 0 20 0 12 0 1000 {} {} 18446744073709551615 0 0 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n", rng.range(100, 9999), rss * 2, rss / PAGE);
    let adj = if cg_path.contains("besteffort") {
        1000
    } else {
        900
    };
    for (f, c) in [
        ("status", status.as_str()),
        ("smaps_rollup", smaps.as_str()),
        ("cgroup", cgroup.as_str()),
        ("oom_score", &format!("{}\n", 666 + adj / 3)),
        ("oom_score_adj", &format!("{adj}\n")),
        ("comm", &format!("{name}\n")),
        ("cmdline", cmdline.as_str()),
        ("stat", stat.as_str()),
        ("environ", "SECRET_TOKEN=do-not-collect\0"),
    ] {
        fs::write(dir.join(f), c)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_the_requested_size_with_exact_v1_identity() {
        let d = tempfile::tempdir().unwrap();
        let s = generate(d.path(), &Spec::new(Version::V1, 60, 20)).unwrap();
        assert!(s.cgroups >= 60 && s.cgroups < 64, "{}", s.cgroups);
        assert_eq!(s.processes, 20);
        let c = &s.containers[0];
        let dir = d.path().join(c.trim_start_matches('/'));
        let stat = fs::read_to_string(dir.join("memory.stat")).unwrap();
        let get = |k: &str| -> u64 {
            stat.lines()
                .find_map(|l| l.strip_prefix(&format!("{k} ")))
                .unwrap()
                .parse()
                .unwrap()
        };
        let usage: u64 = fs::read_to_string(dir.join("memory.usage_in_bytes"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let kmem: u64 = fs::read_to_string(dir.join("memory.kmem.usage_in_bytes"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(usage, get("total_cache") + get("total_rss") + kmem);
    }
}
