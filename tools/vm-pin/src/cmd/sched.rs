//! `vm-pin sched` (virsh schedinfo): CPU shares, periods and quotas.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use vm_host::cgroup::{CpuTuning, VmCgroup};
use vm_spec::CpuTune;

use super::{scope, target};
use crate::cli::Scope;

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

pub(crate) fn sched_cmd(vm: &str, set: Option<&str>, s: Scope, json: bool) -> Result<()> {
    let mut t = target(vm)?;
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
            t.defined = Some(d);
        }
        // Then the values in force, as virsh schedinfo --set prints them.
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
