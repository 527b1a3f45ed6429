//! vm-pin: placement of a VM's threads.

pub mod cli;
mod host;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;

use anyhow::{anyhow, bail, Context, Result};
use cli::{Cli, Command, Scope};
use vm_host::cgroup::{CpuTuning, VmCgroup};
use vm_spec::{CpuList, CpuTune, VmSpec, VmState};

pub fn run(cli: &Cli) -> i32 {
    let json = cli.json || !std::io::stdout().is_terminal();
    let r = match &cli.command {
        Command::Vcpu {
            vm,
            vcpu,
            cpulist,
            scope,
        } => pin_cmd(Kind::Vcpu, vm, *vcpu, cpulist.as_deref(), *scope, json),
        Command::Emulator { vm, cpulist, scope } => {
            emulator_cmd(vm, cpulist.as_deref(), *scope, json)
        }
        Command::Sched { vm, set, scope } => sched_cmd(vm, set.as_deref(), *scope, json),
        Command::Iothread {
            vm,
            id,
            cpulist,
            scope,
        } => pin_cmd(Kind::Iothread, vm, *id, cpulist.as_deref(), *scope, json),
        Command::Host(h) => host::run(h, json),
        Command::Numa {
            vm,
            mode,
            nodeset,
            scope,
        } => numa_cmd(vm, mode.as_deref(), nodeset.as_deref(), *scope, json),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vm-pin: error: {}", vm_spec::text::one_line(e.as_ref()));
            1
        }
    }
}

/// A VM as vm-pin sees it: its running state (if it runs) and definition.
struct Target {
    name: String,
    running: Option<VmState>,
    defined: Option<VmSpec>,
}

fn target(reference: &str) -> Result<Target> {
    let name = vm_control::vm_name(reference)?;
    let running = match vm_control::lookup(&name) {
        Ok(vm_control::Lookup::Running { state, .. }) => Some(state),
        Ok(_) => None,
        // A VM we may not read or ask belongs to someone else: say so.
        Err(e) if e.is_other_users() => {
            bail!("VM '{name}': permission denied (only its owner and root may place it)")
        }
        Err(e) => return Err(e.into()),
    };
    let defined = std::fs::read_to_string(vm_control::defined_spec_path(&name)?)
        .ok()
        .map(|t| VmSpec::from_json(&t).map_err(|e| anyhow!("definition of {name}: {e}")))
        .transpose()?;
    if running.is_none() && defined.is_none() {
        bail!("no VM named '{name}' is running or defined");
    }
    Ok(Target {
        name,
        running,
        defined,
    })
}

/// (live, config) as virsh decides them: neither flag = the running VM if
/// it runs, else its definition.
fn scope(t: &Target, s: Scope) -> Result<(bool, bool)> {
    let (live, config) = if s.live || s.config {
        (s.live, s.config)
    } else {
        (t.running.is_some(), t.running.is_none())
    };
    if live && t.running.is_none() {
        bail!("VM '{}' is not running (--live)", t.name);
    }
    if config && t.defined.is_none() {
        bail!(
            "VM '{}' was started from a file and never defined: there is no definition to change (vm-run define)",
            t.name
        );
    }
    Ok((live, config))
}

fn parse_list(text: &str) -> Result<CpuList> {
    let list: CpuList = text
        .parse()
        .map_err(|e| anyhow!("invalid CPU list '{text}': {e}"))?;
    vm_host::affinity::check_online(&list)
        .map_err(|m| anyhow!("invalid CPU list '{text}': {m}"))?;
    Ok(list)
}

/// The per-thread pins: vCPUs (numbered from 0) and iothreads (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vcpu,
    Iothread,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Vcpu => "vCPU",
            Self::Iothread => "iothread",
        }
    }
    /// The valid numbers for `spec`.
    fn ids(self, spec: &VmSpec) -> std::ops::Range<u32> {
        match self {
            Self::Vcpu => 0..spec.vcpus,
            Self::Iothread => 1..spec.iothreads + 1,
        }
    }
    fn tid(self, st: &VmState, id: u32) -> Option<u32> {
        match self {
            Self::Vcpu => st.vcpu_threads.get(id as usize).copied(),
            Self::Iothread => st.iothread_threads.get(id as usize - 1).copied(),
        }
    }
    fn pins(self, t: &CpuTune) -> &BTreeMap<u32, CpuList> {
        match self {
            Self::Vcpu => &t.vcpupin,
            Self::Iothread => &t.iothreadpin,
        }
    }
    fn pins_mut(self, t: &mut CpuTune) -> &mut BTreeMap<u32, CpuList> {
        match self {
            Self::Vcpu => &mut t.vcpupin,
            Self::Iothread => &mut t.iothreadpin,
        }
    }
}

/// vcpupin / iothreadpin: print the table, or pin one thread.
fn pin_cmd(
    kind: Kind,
    vm: &str,
    id: Option<u32>,
    list: Option<&str>,
    s: Scope,
    json: bool,
) -> Result<()> {
    let t = target(vm)?;
    let spec = t
        .running
        .as_ref()
        .map(|r| &r.spec)
        .or(t.defined.as_ref())
        .expect("one exists");
    let ids = kind.ids(spec);
    let what = kind.label();
    if ids.is_empty() {
        bail!("VM '{}' has no {what}s", t.name);
    }
    match (id, list) {
        (Some(v), Some(text)) => {
            if !ids.contains(&v) {
                bail!(
                    "{what} {v} does not exist (the VM has {}-{})",
                    ids.start,
                    ids.end - 1
                );
            }
            let list = parse_list(text)?;
            let (live, config) = scope(&t, s)?;
            if live {
                let st = t.running.as_ref().expect("checked");
                let tid = kind
                    .tid(st, v)
                    .ok_or_else(|| anyhow!("no thread for {what} {v}"))?;
                vm_host::affinity::set(tid, &list)
                    .with_context(|| format!("pinning {what} {v}"))?;
            }
            if config {
                let mut d = t.defined.clone().expect("checked");
                kind.pins_mut(d.cputune.get_or_insert_with(CpuTune::default))
                    .insert(v, list);
                vm_control::save_definition(&d)?;
            }
            Ok(())
        }
        (None, Some(_)) => bail!("give both a {what} number and a CPU list"),
        (v, None) => {
            let (live, _) = scope(&t, s)?;
            let mut rows = Vec::new();
            for i in ids {
                if v.is_some_and(|v| v != i) {
                    continue;
                }
                let cpus = if live {
                    let st = t.running.as_ref().expect("checked");
                    let tid = kind
                        .tid(st, i)
                        .ok_or_else(|| anyhow!("no thread for {what} {i}"))?;
                    vm_host::affinity::get(tid)?.to_string()
                } else {
                    pinned(t.defined.as_ref(), |c| kind.pins(c).get(&i).cloned())
                };
                rows.push((i.to_string(), cpus));
            }
            let (head, key) = match kind {
                Kind::Vcpu => ("VCPU", "vcpu"),
                Kind::Iothread => ("IOThread ID", "iothread"),
            };
            print_table(
                &[head, "CPU Affinity"],
                &rows,
                json,
                |(v, c)| serde_json::json!({key: v.parse::<u32>().unwrap_or(0), "cpus": c}),
            );
            Ok(())
        }
    }
}

/// A pin from the definition, or every online CPU when there is none.
fn pinned(spec: Option<&VmSpec>, f: impl Fn(&CpuTune) -> Option<CpuList>) -> String {
    spec.and_then(|s| s.cputune.as_ref())
        .and_then(f)
        .map(|l| l.to_string())
        .or_else(|| vm_host::affinity::online_cpus().ok().map(|l| l.to_string()))
        .unwrap_or_default()
}

fn print_table(
    head: &[&str; 2],
    rows: &[(String, String)],
    json: bool,
    to_json: impl Fn(&(String, String)) -> serde_json::Value,
) {
    if json {
        let v: Vec<_> = rows.iter().map(to_json).collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    let mut out = String::new();
    let w = head[0].len().max(6);
    let _ = writeln!(out, " {:<w$} {}", head[0], head[1]);
    let _ = writeln!(out, "{}", "-".repeat(16 + w));
    for (a, b) in rows {
        let _ = writeln!(out, " {a:<w$} {b}");
    }
    print!("{out}");
}

fn emulator_cmd(vm: &str, list: Option<&str>, s: Scope, json: bool) -> Result<()> {
    let t = target(vm)?;
    let (live, config) = scope(&t, s)?;
    if let Some(text) = list {
        let list = parse_list(text)?;
        if live {
            let pid = t.running.as_ref().expect("checked").pid;
            vm_host::affinity::set(pid, &list).context("pinning the emulator thread")?;
        }
        if config {
            let mut d = t.defined.clone().expect("checked");
            d.cputune.get_or_insert_with(CpuTune::default).emulatorpin = Some(list);
            vm_control::save_definition(&d)?;
        }
    } else {
        let cpus = if live {
            vm_host::affinity::get(t.running.as_ref().expect("checked").pid)?.to_string()
        } else {
            pinned(t.defined.as_ref(), |c| c.emulatorpin.clone())
        };
        print_table(
            &["", "CPU Affinity"],
            &[("*".into(), cpus)],
            json,
            |(_, c)| serde_json::json!({"emulator": c}),
        );
    }
    Ok(())
}

const SCHED_KEYS: [&str; 5] = [
    "cpu_shares",
    "vcpu_period",
    "vcpu_quota",
    "emulator_period",
    "emulator_quota",
];

fn parse_sched(text: &str) -> Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for item in text.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| anyhow!("'{item}': expected key=value"))?;
        if !SCHED_KEYS.contains(&k) {
            bail!(
                "unknown scheduler parameter '{k}' (known: {})",
                SCHED_KEYS.join(", ")
            );
        }
        let v: i64 = v.parse().map_err(|_| anyhow!("'{item}': not a number"))?;
        out.insert(k.to_string(), v);
    }
    Ok(out)
}

fn sched_cmd(vm: &str, set: Option<&str>, s: Scope, json: bool) -> Result<()> {
    let t = target(vm)?;
    let (live, config) = scope(&t, s)?;
    if let Some(text) = set {
        let changes = parse_sched(text)?;
        // Validate through the spec's own rules before touching anything.
        let base = t
            .running
            .as_ref()
            .map(|r| r.spec.clone())
            .or(t.defined.clone())
            .expect("one exists");
        let mut probe = base.clone();
        apply_to_spec(probe.cputune.get_or_insert_with(CpuTune::default), &changes);
        probe.validate().map_err(|e| anyhow!("{e}"))?;
        if live {
            let st = t.running.as_ref().expect("checked");
            let cg = VmCgroup::find(&t.name, st.pid)
                .ok_or_else(|| anyhow!("VM '{}' has no cgroup (see its vm.log)", t.name))?;
            let get = |k: &str| changes.get(k).copied();
            if let Some(sh) = get("cpu_shares") {
                cg.set_cpu_tuning(
                    None,
                    CpuTuning {
                        shares: Some(sh as u64),
                        ..CpuTuning::default()
                    },
                )?;
            }
            let vt = CpuTuning {
                shares: None,
                period: get("vcpu_period").map(|v| v as u64),
                quota: get("vcpu_quota"),
            };
            if vt != CpuTuning::default() {
                for i in 0..st.vcpu_threads.len() {
                    cg.set_cpu_tuning(Some(&format!("vcpu{i}")), vt)?;
                }
            }
            let et = CpuTuning {
                shares: None,
                period: get("emulator_period").map(|v| v as u64),
                quota: get("emulator_quota"),
            };
            if et != CpuTuning::default() {
                cg.set_cpu_tuning(Some("emulator"), et)?;
            }
        }
        if config {
            let mut d = t.defined.clone().expect("checked");
            apply_to_spec(d.cputune.get_or_insert_with(CpuTune::default), &changes);
            vm_control::save_definition(&d)?;
        }
        return Ok(());
    }
    let values: Vec<(String, String)> = if live {
        let st = t.running.as_ref().expect("checked");
        let cg = VmCgroup::find(&t.name, st.pid)
            .ok_or_else(|| anyhow!("VM '{}' has no cgroup (see its vm.log)", t.name))?;
        let vm = cg.cpu_tuning(None)?;
        let vc = cg.cpu_tuning(Some("vcpu0"))?;
        let em = cg.cpu_tuning(Some("emulator"))?;
        vec![
            (
                "cpu_shares".into(),
                vm.shares.map_or("-".into(), |v| v.to_string()),
            ),
            (
                "vcpu_period".into(),
                vc.period.map_or("-".into(), |v| v.to_string()),
            ),
            (
                "vcpu_quota".into(),
                vc.quota.map_or("-".into(), |v| v.to_string()),
            ),
            (
                "emulator_period".into(),
                em.period.map_or("-".into(), |v| v.to_string()),
            ),
            (
                "emulator_quota".into(),
                em.quota.map_or("-".into(), |v| v.to_string()),
            ),
        ]
    } else {
        let c = t
            .defined
            .as_ref()
            .and_then(|d| d.cputune.clone())
            .unwrap_or_default();
        let show = |v: Option<i64>| v.map_or("-".into(), |v| v.to_string());
        vec![
            ("cpu_shares".into(), show(c.shares.map(|v| v as i64))),
            ("vcpu_period".into(), show(c.vcpu_period.map(|v| v as i64))),
            ("vcpu_quota".into(), show(c.vcpu_quota)),
            (
                "emulator_period".into(),
                show(c.emulator_period.map(|v| v as i64)),
            ),
            ("emulator_quota".into(), show(c.emulator_quota)),
        ]
    };
    if json {
        let mut m = serde_json::Map::new();
        m.insert("scheduler".into(), serde_json::json!("posix"));
        for (k, v) in &values {
            m.insert(
                k.clone(),
                v.parse::<i64>()
                    .map_or(serde_json::Value::Null, |n| serde_json::json!(n)),
            );
        }
        println!("{}", serde_json::Value::Object(m));
    } else {
        println!("{:<15}: posix", "Scheduler");
        for (k, v) in values {
            println!("{k:<15}: {v}");
        }
    }
    Ok(())
}

fn apply_to_spec(c: &mut CpuTune, changes: &BTreeMap<String, i64>) {
    for (k, &v) in changes {
        match k.as_str() {
            "cpu_shares" => c.shares = Some(v as u64),
            "vcpu_period" => c.vcpu_period = Some(v as u64),
            "vcpu_quota" => c.vcpu_quota = Some(v),
            "emulator_period" => c.emulator_period = Some(v as u64),
            "emulator_quota" => c.emulator_quota = Some(v),
            _ => {}
        }
    }
}

fn numa_cmd(
    vm: &str,
    mode: Option<&str>,
    nodeset: Option<&str>,
    s: Scope,
    json: bool,
) -> Result<()> {
    let t = target(vm)?;
    let (live, config) = scope(&t, s)?;
    let mode = mode
        .map(|m| -> Result<vm_spec::NumaMode> {
            serde_json::from_value(serde_json::json!(m))
                .map_err(|_| anyhow!("invalid NUMA mode '{m}' (strict, preferred, interleave)"))
        })
        .transpose()?;
    let nodes = nodeset
        .map(|n| -> Result<CpuList> {
            let l: CpuList = n
                .parse()
                .map_err(|e| anyhow!("invalid nodeset '{n}': {e}"))?;
            vm_host::affinity::check_nodes_online(&l)
                .map_err(|m| anyhow!("invalid nodeset '{n}': {m}"))?;
            Ok(l)
        })
        .transpose()?;
    if mode.is_none() && nodes.is_none() {
        let spec = if live {
            t.running.as_ref().map(|r| &r.spec)
        } else {
            t.defined.as_ref()
        };
        let nt = spec.and_then(|s| s.numatune.as_ref());
        let mode = nt
            .and_then(|n| serde_json::to_value(n.mode).ok())
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "-".into());
        let nodeset = if live {
            let st = t.running.as_ref().expect("checked");
            VmCgroup::find(&t.name, st.pid)
                .and_then(|cg| cg.mems().ok())
                .unwrap_or_else(|| "-".into())
        } else {
            nt.map_or("-".to_string(), |n| n.nodeset.to_string())
        };
        if json {
            println!(
                "{}",
                serde_json::json!({"numa_mode": mode, "numa_nodeset": nodeset})
            );
        } else {
            println!(
                "{:<13}: {mode}\n{:<13}: {nodeset}",
                "numa_mode", "numa_nodeset"
            );
        }
        return Ok(());
    }
    if live {
        if mode.is_some() {
            bail!("the NUMA mode cannot change while the VM runs (use --config)");
        }
        let st = t.running.as_ref().expect("checked");
        let cg = VmCgroup::find(&t.name, st.pid)
            .ok_or_else(|| anyhow!("VM '{}' has no cgroup (see its vm.log)", t.name))?;
        cg.set_mems(&nodes.clone().expect("checked above").to_string())?;
    }
    if config {
        let mut d = t.defined.clone().expect("checked");
        let cur = d.numatune.take();
        let mode = mode
            .or(cur.as_ref().map(|c| c.mode))
            .unwrap_or(vm_spec::NumaMode::Strict);
        let nodeset = nodes
            .or(cur.map(|c| c.nodeset))
            .ok_or_else(|| anyhow!("give --nodeset for a VM without numatune"))?;
        d.numatune = Some(vm_spec::NumaTune { mode, nodeset });
        vm_control::save_definition(&d)?;
    }
    Ok(())
}
