//! JSON printing in qemu-img's layout (four-space indents).

use serde::Serialize;
use serde_json::Value;

pub fn pretty(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    v.serialize(&mut ser).expect("a Value always serialises");
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}
