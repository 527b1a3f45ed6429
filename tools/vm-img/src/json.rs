//! JSON printing in qemu-img's layout: four-space indents, and an object's
//! keys in the order qemu-img prints them. qemu-img's records pass through
//! QEMU's QDict, which iterates its 512 hash buckets in order, so the order
//! is that of each key's bucket under QDict's hash (tdb_hash). Scripts and
//! QEMU's iotests that compare whole outputs see the same text.

use serde_json::Value;

/// QDict's bucket for `key` (qobject/qdict.c: tdb_hash, modulo 512).
fn qdict_bucket(key: &str) -> u32 {
    let mut value = 0x238F_13AFu32.wrapping_mul(key.len() as u32);
    for (i, &c) in key.as_bytes().iter().enumerate() {
        value = value.wrapping_add(u32::from(c) << ((i * 5) % 24));
    }
    1_103_515_243u32.wrapping_mul(value).wrapping_add(12345) % 512
}

/// An object's keys in qemu-img's order.
fn ordered_keys(m: &serde_json::Map<String, Value>) -> Vec<&String> {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort_by_key(|k| (qdict_bucket(k), *k));
    keys
}

/// qemu-img's human form of a nested record (its "Format specific
/// information"): `key: value` lines with dashes in keys as spaces, lists
/// as `[i]:`, four spaces per level, starting at `level`.
pub fn human(v: &Value, level: usize, out: &mut String) {
    let line = |out: &mut String, label: &str, value: &Value| {
        let composite = matches!(value, Value::Object(_) | Value::Array(_));
        out.extend(std::iter::repeat_n(' ', level * 4));
        out.push_str(label);
        out.push(':');
        if composite {
            out.push('\n');
            human(value, level + 1, out);
        } else {
            out.push(' ');
            match value {
                Value::String(s) => out.push_str(s),
                other => out.push_str(&other.to_string()),
            }
            out.push('\n');
        }
    };
    match v {
        Value::Object(m) => {
            for k in ordered_keys(m) {
                line(out, &k.replace('-', " "), &m[k]);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                line(out, &format!("[{i}]"), x);
            }
        }
        _ => {}
    }
}

pub fn pretty(v: &Value) -> String {
    let mut out = String::new();
    write(v, 0, &mut out);
    out
}

fn write(v: &Value, indent: usize, out: &mut String) {
    let pad = |n: usize, out: &mut String| out.extend(std::iter::repeat_n(' ', n));
    match v {
        Value::Object(m) => {
            let keys = ordered_keys(m);
            out.push_str("{\n");
            // Empty ones too close on a line of their own, as QEMU's writer.
            for (i, k) in keys.iter().enumerate() {
                pad(indent + 4, out);
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push_str(": ");
                write(&m[*k], indent + 4, out);
                out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
            }
            pad(indent, out);
            out.push('}');
        }
        Value::Array(a) => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                pad(indent + 4, out);
                write(x, indent + 4, out);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            pad(indent, out);
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_in_qemu_imgs_order() {
        // As qemu-img 7.2 prints `info --output=json` and `check`.
        let info = serde_json::json!({
            "dirty-flag": false, "backing-filename": "b", "virtual-size": 1,
            "filename": "f", "cluster-size": 65536, "format": "qcow2",
            "actual-size": 2, "full-backing-filename": "b",
            "backing-filename-format": "qcow2", "snapshots": [],
            "format-specific": {"type": "qcow2", "data": {}},
        });
        let keys: Vec<String> = pretty(&info)
            .lines()
            .filter(|l| l.starts_with("    \""))
            .map(|l| l.trim().split('"').nth(1).unwrap().to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "backing-filename-format",
                "snapshots",
                "virtual-size",
                "filename",
                "cluster-size",
                "format",
                "actual-size",
                "format-specific",
                "full-backing-filename",
                "backing-filename",
                "dirty-flag"
            ]
        );
        assert_eq!(
            pretty(&serde_json::json!({"data": {}, "type": "qcow2", "snapshots": [1, {}]})),
            "{\n    \"snapshots\": [\n        1,\n        {\n        }\n    ],\n    \"type\": \"qcow2\",\n    \"data\": {\n    }\n}"
        );
    }
}
