//! Manifests read as `kubectl` reads them. kubectl decodes YAML with `sigs.k8s.io/yaml`, which
//! is go-yaml v2 underneath: a *plain* (unquoted) scalar is resolved by YAML 1.1 rules, not by
//! YAML 1.2's core schema that [`serde_saphyr`] implements. The difference is a security fault
//! where it matters most: `defaultMode: 0400` is octal 256 (`r--------`) for kubectl and
//! decimal 400 (`0o620`, group-writable) for a YAML 1.2 reader.
//!
//! The text is first read by `serde_saphyr` exactly as before (its budgets for events, nodes,
//! anchors and alias replay, its limit on documents, its error messages with a position): only
//! a text it accepts is read again here, from the events of the same parser
//! (`granit_parser`, which `serde_saphyr` is built on and re-exports), where each scalar's
//! style is known. The resolution of go-yaml v2 (`resolve.go`, branch v2) and the conversion to
//! JSON of `sigs.k8s.io/yaml` (`convertToJSONableObject`) are followed:
//!
//! - a quoted or block scalar (`'0400'`, `"yes"`, `|`) is a string; an explicit `!!str` too;
//! - plain `~`, `null`, `Null`, `NULL` and the empty scalar are null;
//! - plain `y Y yes Yes YES on On ON true True TRUE` are true, `n N no No NO off Off OFF false
//!   False FALSE` false (other spellings, such as `yES`, stay strings);
//! - a plain scalar starting with a digit or a sign, with every `_` removed, is an integer as
//!   Go's `strconv.ParseInt(s, 0, 64)` reads it: `0400` and `0o400` octal (256), `0x1F` hex,
//!   `0b1010` binary, `+12`, `1_000`; then an unsigned 64-bit integer; then a float when it has
//!   YAML's float form (`1.5`, `1e3`, `.5`, `08` = 8.0); `.inf`/`.nan` are floats JSON cannot
//!   hold (an error, as in kubectl); everything else, timestamps and `1:30` included, a string;
//! - numbers then take the form kubectl's JSON gives them: a float with no fractional part is
//!   an integer (`1.0` → `1`), an integer above `i64::MAX` a float;
//! - mapping keys are resolved the same way and then written as JSON keys: `yes:` is `"true"`,
//!   `0x10:` is `"16"`, a float key in Go's shortest 32-bit form; a null, collection or
//!   64-bit unsigned key is an error (kubectl refuses them), and so are two keys that become the
//!   same text;
//! - `<<` merges a mapping or a list of mappings in go-yaml v2's order: where it is written, so a
//!   key written before it is overridden and one written after it wins (YAML's merge type would
//!   let every written key win); within a list the earlier mapping wins;
//! - tags other than the core ones leave the text a string.
//!
//! The object tree is built without recursion; alias expansion is bounded by [`MAX_NODES`].

use std::collections::HashMap;

use base64::Engine;
use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle, Span, Tag};

/// Nodes one text may materialise, aliases expanded: `serde_saphyr`'s default budget of
/// 250,000 nodes plus its 1,000,000 replayed alias events, so anything it accepted fits.
pub const MAX_NODES: usize = 1_250_000;

/// A scalar as go-yaml v2 resolves it, before it becomes JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    /// Go `int` (64-bit).
    Int(i64),
    /// Go `uint64`: a decimal, hex, octal or binary integer above `i64::MAX`.
    Uint(u64),
    /// Go `float64`, possibly `±inf` or NaN (`.inf`, `.nan`).
    Float(f64),
    Str(String),
}

/// Resolves a plain (unquoted, untagged) scalar as go-yaml v2 does (see the module docs).
pub fn resolve_plain(text: &str) -> Scalar {
    let hint = match text.as_bytes().first() {
        None => b'N',
        Some(b'+' | b'-') => b'S',
        Some(b'0'..=b'9') => b'D',
        Some(b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~') => b'M',
        Some(b'.') => b'.',
        Some(_) => return Scalar::Str(text.to_owned()),
    };
    if let Some(known) = well_known(text) {
        return known;
    }
    match hint {
        b'.' => {
            if let Some(f) = dot_float(text) {
                return Scalar::Float(f);
            }
        }
        b'D' | b'S' => {
            let plain: String = text.chars().filter(|c| *c != '_').collect();
            if let Some(i) = go_parse_int(&plain, 0) {
                return Scalar::Int(i);
            }
            if let Some(u) = go_parse_uint(&plain, 0) {
                return Scalar::Uint(u);
            }
            if yaml_style_float(&plain) {
                if let Some(f) = plain.parse::<f64>().ok().filter(|f| f.is_finite()) {
                    return Scalar::Float(f);
                }
            }
            if let Some(rest) = plain.strip_prefix("0b") {
                if let Some(i) = go_parse_int(rest, 2) {
                    return Scalar::Int(i);
                }
                if let Some(u) = go_parse_uint(rest, 2) {
                    return Scalar::Uint(u);
                }
            } else if let Some(rest) = plain.strip_prefix("-0b") {
                if let Some(i) = go_parse_int(&format!("-{rest}"), 2) {
                    return Scalar::Int(i);
                }
            }
        }
        _ => {}
    }
    Scalar::Str(text.to_owned())
}

/// go-yaml v2's table of spellings (booleans, nulls, infinities, NaN).
fn well_known(text: &str) -> Option<Scalar> {
    Some(match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Scalar::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Scalar::Bool(false)
        }
        "" | "~" | "null" | "Null" | "NULL" => Scalar::Null,
        ".nan" | ".NaN" | ".NAN" => Scalar::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Scalar::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Scalar::Float(f64::NEG_INFINITY),
        _ => return None,
    })
}

/// Go's `strconv.ParseUint(s, base, 64)` for `base` 0 (prefixes `0b`, `0o`, `0x` in either
/// case, a leading `0` for octal) or an explicit base; `None` on any error. Underscores were
/// removed by the caller.
fn go_parse_uint(s: &str, base: u32) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let (base, digits) = if base == 0 {
        let b = s.as_bytes();
        if b[0] == b'0' {
            match (b.len() >= 3).then(|| b[1].to_ascii_lowercase()) {
                Some(b'b') => (2, &s[2..]),
                Some(b'o') => (8, &s[2..]),
                Some(b'x') => (16, &s[2..]),
                _ => (8, &s[1..]),
            }
        } else {
            (10, s)
        }
    } else {
        (base, s)
    };
    let mut n: u64 = 0;
    for c in digits.chars() {
        let d = c.to_digit(36)?;
        if d >= base {
            return None;
        }
        n = n.checked_mul(u64::from(base))?.checked_add(u64::from(d))?;
    }
    Some(n)
}

/// Go's `strconv.ParseInt(s, base, 64)`: an optional sign, then [`go_parse_uint`].
fn go_parse_int(s: &str, base: u32) -> Option<i64> {
    let (neg, rest) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let un = go_parse_uint(rest, base)?;
    if neg {
        (un <= 1 << 63).then(|| (un as i64).wrapping_neg())
    } else {
        i64::try_from(un).ok()
    }
}

/// go-yaml v2's `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseFloat` on a scalar starting with `.` (`.5`, `.5e3`, `.5_5`): digits after
/// the point, an optional exponent, underscores only between digits; finite only.
fn dot_float(s: &str) -> Option<f64> {
    if !underscores_between_digits(s) {
        return None;
    }
    let plain: String = s.chars().filter(|c| *c != '_').collect();
    let b = plain.as_bytes();
    let mut i = 1;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == 1 {
        return None;
    }
    if i < b.len() {
        if b[i] != b'e' && b[i] != b'E' {
            return None;
        }
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i != b.len() {
            return None;
        }
    }
    plain.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Go's `underscoreOK` for a decimal text: each `_` between two digits.
fn underscores_between_digits(s: &str) -> bool {
    let mut prev_digit = false;
    let mut after_underscore = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            prev_digit = true;
            after_underscore = false;
        } else if c == '_' {
            if !prev_digit {
                return false;
            }
            prev_digit = false;
            after_underscore = true;
        } else {
            if after_underscore {
                return false;
            }
            prev_digit = false;
        }
    }
    !after_underscore
}

/// A resolved scalar as the JSON value kubectl sends: integral floats as integers, integers
/// above `i64::MAX` as floats, non-finite floats refused (Go's `json.Marshal` refuses them).
pub fn scalar_to_json(s: &Scalar) -> Result<Value, String> {
    Ok(match s {
        Scalar::Null => Value::Null,
        Scalar::Bool(b) => Value::Bool(*b),
        Scalar::Int(i) => Value::Number((*i).into()),
        // kubectl's JSON reading holds an integer above `i64::MAX` as a float64.
        Scalar::Uint(u) => Number::from_f64(*u as f64).map_or(Value::Null, Value::Number),
        Scalar::Float(f) if !f.is_finite() => {
            return Err(format!(
                "{} is not a number JSON can carry (kubectl refuses it too)",
                if f.is_nan() { ".nan" } else { ".inf" }
            ))
        }
        // Go's JSON writes 3.0 as `3`, and the API server reads that as an integer.
        Scalar::Float(f) if f.fract() == 0.0 && f.abs() < 9_223_372_036_854_775_808.0 => {
            Value::Number((*f as i64).into())
        }
        Scalar::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Scalar::Str(s) => Value::String(s.clone()),
    })
}

/// A resolved scalar as a JSON object key, as `sigs.k8s.io/yaml` writes it.
pub fn scalar_to_key(s: &Scalar) -> Result<String, String> {
    match s {
        Scalar::Str(s) => Ok(s.clone()),
        Scalar::Int(i) => Ok(i.to_string()),
        Scalar::Bool(b) => Ok(b.to_string()),
        Scalar::Float(f) => Ok(go_format_g32(*f)),
        Scalar::Null => Err("a null mapping key cannot be a JSON key (kubectl refuses it)".into()),
        Scalar::Uint(u) => Err(format!(
            "mapping key {u} is above the 64-bit signed range (kubectl refuses it)"
        )),
    }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)`, with go-yaml's `.inf`, `-.inf`, `.nan`.
fn go_format_g32(f: f64) -> String {
    let x = f as f32;
    if x.is_nan() {
        return ".nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { ".inf" } else { "-.inf" }.into();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x == 0.0 {
        return format!("{sign}0");
    }
    // Shortest digits that read back as the same f32, and the decimal exponent.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let nd = digits.len() as i32;
    let dp = exp.parse::<i32>().unwrap_or(0) + 1;
    let mut eprec = 6;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    let e = dp - 1;
    if e < -4 || e >= eprec {
        let mut out = format!("{sign}{}", &digits[..1]);
        if nd > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let esign = if e < 0 { '-' } else { '+' };
        out.push_str(&format!("e{esign}{:02}", e.abs()));
        out
    } else if dp <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-dp) as usize))
    } else if dp >= nd {
        format!("{sign}{digits}{}", "0".repeat((dp - nd) as usize))
    } else {
        let (int, frac) = digits.split_at(dp as usize);
        format!("{sign}{int}.{frac}")
    }
}

/// The name of a tag in the YAML core namespace (`!!int` → `int`), if it is one.
fn core_name(tag: &Tag) -> Option<String> {
    tag.suffix_in_namespace("tag:yaml.org,2002:")
        .map(|c| c.into_owned())
}

/// A scalar with its style and tag, as go-yaml v2 decodes it into an `interface{}`.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Scalar, String> {
    let Some(tag) = tag else {
        return Ok(if style == ScalarStyle::Plain {
            resolve_plain(text)
        } else {
            Scalar::Str(text.to_owned())
        });
    };
    let Some(name) = core_name(tag) else {
        // `!foo`, `!`: go-yaml keeps the text.
        return Ok(Scalar::Str(text.to_owned()));
    };
    let resolved = resolve_plain(text);
    let mismatch = |resolved: &Scalar| {
        let got = match resolved {
            Scalar::Null => "null",
            Scalar::Bool(_) => "bool",
            Scalar::Int(_) | Scalar::Uint(_) => "int",
            Scalar::Float(_) => "float",
            Scalar::Str(_) => "str",
        };
        format!("cannot decode !!{got} `{text}` as a !!{name}")
    };
    match name.as_str() {
        "str" => Ok(Scalar::Str(text.to_owned())),
        "binary" => {
            let compact: String = text.chars().filter(|c| *c != '\n' && *c != '\r').collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|_| format!("!!binary `{text}` is not base64"))?;
            Ok(Scalar::Str(String::from_utf8_lossy(&bytes).into_owned()))
        }
        "int" => match resolved {
            Scalar::Int(_) | Scalar::Uint(_) => Ok(resolved),
            other => Err(mismatch(&other)),
        },
        "float" => match resolved {
            Scalar::Float(_) => Ok(resolved),
            Scalar::Int(i) => Ok(Scalar::Float(i as f64)),
            other => Err(mismatch(&other)),
        },
        "bool" => match resolved {
            Scalar::Bool(_) => Ok(resolved),
            other => Err(mismatch(&other)),
        },
        "null" => match resolved {
            Scalar::Null => Ok(resolved),
            other => Err(mismatch(&other)),
        },
        // A date (`2001-12-14`, with an optional time) stays its text, as go-yaml v2 returns
        // timestamps into an `interface{}`.
        "timestamp" => {
            let b = text.as_bytes();
            if b.len() >= 8 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' {
                Ok(Scalar::Str(text.to_owned()))
            } else {
                Err(format!("cannot decode `{text}` as a !!timestamp"))
            }
        }
        _ => Ok(Scalar::Str(text.to_owned())),
    }
}

/// A finished node: a scalar (kept resolved, so that a key can be written as Go writes it) or
/// a collection already in JSON.
#[derive(Clone)]
enum Node {
    Scalar { scalar: Scalar, merge: bool },
    Tree(Value),
}

impl Node {
    fn into_value(self) -> Result<Value, String> {
        match self {
            Node::Scalar { scalar, .. } => scalar_to_json(&scalar),
            Node::Tree(v) => Ok(v),
        }
    }
}

enum Slot {
    Key(String),
    Merge,
}

enum Frame {
    Seq {
        anchor: usize,
        nodes: usize,
        items: Vec<Value>,
    },
    Map {
        anchor: usize,
        nodes: usize,
        entries: Map<String, Value>,
        /// Keys written in the mapping (not merged), to refuse one given twice.
        written: std::collections::HashSet<String>,
        slot: Option<Slot>,
    },
}

/// `<<: source` where it is written, as go-yaml v2 does: the source's keys override what the
/// mapping holds so far; in a list of mappings the earlier one wins.
fn merge_into(entries: &mut Map<String, Value>, source: Value) -> Result<(), String> {
    let maps = match source {
        Value::Object(m) => vec![m],
        Value::Array(list) => list
            .into_iter()
            .rev()
            .map(|v| match v {
                Value::Object(m) => Ok(m),
                _ => Err("`<<` merges only mappings".to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err("`<<` needs a mapping or a list of mappings".into()),
    };
    for m in maps {
        entries.extend(m);
    }
    Ok(())
}

fn at(span: &Span) -> String {
    format!(
        " at line {} column {}",
        span.start.line(),
        span.start.col() + 1
    )
}

/// Reads every document of `text` (one value per document, `null` for an empty one) with the
/// resolution of the module docs. Errors are one line naming the position.
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let mut options = Options::default();
    options.emit_comments = false;
    let parser = Parser::new_from_str_with_options(text, options);
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
    let mut total = 0usize;
    for item in parser {
        let (event, span) = item.map_err(|e| e.to_string())?;
        let err = |m: String| format!("{m}{}", at(&span));
        // A finished node and its size in nodes (aliases count what they expand to).
        let finished: Option<(Node, usize)> = match event {
            Event::Scalar(value, style, anchor, tag) => {
                let scalar = resolve_scalar(&value, style, tag.as_deref()).map_err(err)?;
                let merge = value == "<<"
                    && match tag.as_deref() {
                        None => style == ScalarStyle::Plain,
                        Some(t) => core_name(t).as_deref() == Some("merge"),
                    };
                let node = Node::Scalar { scalar, merge };
                if anchor != 0 {
                    anchors.insert(anchor, (node.clone(), 1));
                }
                total += 1;
                Some((node, 1))
            }
            Event::Alias(id) => {
                let (node, size) = anchors
                    .get(&id)
                    .ok_or_else(|| err("alias to a node that is not finished".into()))?;
                total += size;
                if total > MAX_NODES {
                    return Err(err(format!(
                        "more than {MAX_NODES} nodes once aliases are expanded"
                    )));
                }
                Some((node.clone(), *size))
            }
            Event::SequenceStart(_, anchor, _) => {
                stack.push(Frame::Seq {
                    anchor,
                    nodes: 1,
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(_, anchor, _) => {
                stack.push(Frame::Map {
                    anchor,
                    nodes: 1,
                    entries: Map::new(),
                    written: std::collections::HashSet::new(),
                    slot: None,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                total += 1;
                match stack.pop() {
                    Some(Frame::Seq {
                        anchor,
                        nodes,
                        items,
                    }) => {
                        let node = Node::Tree(Value::Array(items));
                        if anchor != 0 {
                            anchors.insert(anchor, (node.clone(), nodes));
                        }
                        Some((node, nodes))
                    }
                    Some(Frame::Map {
                        anchor,
                        nodes,
                        entries,
                        ..
                    }) => {
                        let node = Node::Tree(Value::Object(entries));
                        if anchor != 0 {
                            anchors.insert(anchor, (node.clone(), nodes));
                        }
                        Some((node, nodes))
                    }
                    None => return Err(err("unbalanced collection end".into())),
                }
            }
            Event::DocumentEnd => {
                anchors.clear();
                None
            }
            Event::UnresolvedAlias(name) => {
                return Err(err(format!("alias `*{name}` has no anchor")))
            }
            _ => None,
        };
        if total > MAX_NODES {
            return Err(err(format!(
                "more than {MAX_NODES} nodes once aliases are expanded"
            )));
        }
        let Some((node, size)) = finished else {
            continue;
        };
        match stack.last_mut() {
            None => docs.push(node.into_value().map_err(err)?),
            Some(Frame::Seq { nodes, items, .. }) => {
                *nodes += size;
                items.push(node.into_value().map_err(err)?);
            }
            Some(Frame::Map {
                nodes,
                entries,
                written,
                slot,
                ..
            }) => {
                *nodes += size;
                match slot.take() {
                    None => {
                        *slot = Some(match node {
                            Node::Scalar { merge: true, .. } => Slot::Merge,
                            Node::Scalar { scalar, .. } => {
                                let key = scalar_to_key(&scalar).map_err(err)?;
                                if !written.insert(key.clone()) {
                                    return Err(err(format!(
                                        "mapping key `{key}` is given twice (keys are read \
                                         as kubectl reads them: `yes` is `true`, `0x10` is \
                                         `16`)"
                                    )));
                                }
                                Slot::Key(key)
                            }
                            Node::Tree(_) => {
                                return Err(err(
                                    "a mapping or list as a mapping key cannot be a JSON key"
                                        .into(),
                                ))
                            }
                        });
                    }
                    Some(Slot::Key(key)) => {
                        entries.insert(key, node.into_value().map_err(err)?);
                    }
                    Some(Slot::Merge) => {
                        merge_into(entries, node.into_value().map_err(err)?).map_err(err)?
                    }
                }
            }
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Value {
        let mut docs = documents(text).unwrap();
        assert_eq!(docs.len(), 1, "{text}");
        docs.remove(0)
    }

    #[test]
    fn plain_scalars_resolve_as_go_yaml_v2_does() {
        let cases: &[(&str, Value)] = &[
            ("0400", json!(256)),
            ("0644", json!(420)),
            ("0755", json!(493)),
            ("-0644", json!(-420)),
            ("+0644", json!(420)),
            ("0o17", json!(15)),
            ("0O17", json!(15)),
            ("0x1F", json!(31)),
            ("0X1f", json!(31)),
            ("-0x1F", json!(-31)),
            ("0b1010", json!(10)),
            ("0B1010", json!(10)),
            ("-0b1010", json!(-10)),
            ("0b+101", json!(5)),
            ("1_000", json!(1000)),
            ("0_10", json!(8)),
            ("+12", json!(12)),
            ("-0", json!(0)),
            ("0", json!(0)),
            ("08", json!(8)),
            ("09.5", json!(9.5)),
            ("1.0", json!(1)),
            ("1.", json!(1)),
            ("1e3", json!(1000)),
            ("1.5", json!(1.5)),
            ("+.5", json!(0.5)),
            (".5", json!(0.5)),
            (".5_5", json!(0.55)),
            ("1e-7", json!(1e-7)),
            ("9223372036854775807", json!(i64::MAX)),
            ("-9223372036854775808", json!(i64::MIN)),
            ("18446744073709551615", json!(u64::MAX as f64)),
            (
                "9223372036854775808",
                json!(9_223_372_036_854_775_808.0_f64),
            ),
            ("yes", json!(true)),
            ("Yes", json!(true)),
            ("YES", json!(true)),
            ("y", json!(true)),
            ("Y", json!(true)),
            ("on", json!(true)),
            ("On", json!(true)),
            ("ON", json!(true)),
            ("True", json!(true)),
            ("no", json!(false)),
            ("No", json!(false)),
            ("NO", json!(false)),
            ("n", json!(false)),
            ("N", json!(false)),
            ("off", json!(false)),
            ("Off", json!(false)),
            ("OFF", json!(false)),
            ("FALSE", json!(false)),
            ("~", Value::Null),
            ("null", Value::Null),
            ("Null", Value::Null),
            ("NULL", Value::Null),
            ("", Value::Null),
            // Strings for go-yaml v2 too.
            ("yES", json!("yES")),
            ("nil", json!("nil")),
            ("0x", json!("0x")),
            ("0o", json!("0o")),
            ("0o8", json!("0o8")),
            ("1:30", json!("1:30")),
            ("2001-12-14", json!("2001-12-14")),
            ("1e400", json!("1e400")),
            ("._5", json!("._5")),
            ("_1", json!("_1")),
            ("1.2.3", json!("1.2.3")),
            ("0x1G", json!("0x1G")),
            ("<<", json!("<<")),
            ("12Mi", json!("12Mi")),
        ];
        for (text, want) in cases {
            assert_eq!(&one(&format!("v: {text}\n"))["v"], want, "`{text}`");
        }
    }

    #[test]
    fn quoted_block_and_str_tagged_scalars_stay_strings() {
        let v = one(
            "a: '0400'\nb: \"yes\"\nc: !!str 0644\nd: |\n  0400\ne: >-\n  on\nf: !custom 0400\ng: ! 12\n",
        );
        assert_eq!(
            v,
            json!({"a": "0400", "b": "yes", "c": "0644", "d": "0400\n", "e": "on", "f": "0400", "g": "12"})
        );
    }

    #[test]
    fn explicit_core_tags_resolve_their_text_or_fail() {
        let v = one(
            "a: !!int '0400'\nb: !!float 3\nc: !!bool \"on\"\nd: !!null ''\ne: !!binary aGk=\n",
        );
        assert_eq!(
            v,
            json!({"a": 256, "b": 3, "c": true, "d": null, "e": "hi"})
        );
        for bad in [
            "a: !!int abc\n",
            "a: !!bool 1\n",
            "a: !!null x\n",
            "a: !!float yes\n",
        ] {
            assert!(documents(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_become_json_keys_as_kubectl_writes_them() {
        let v = one("yes: a\n0x10: b\n1.5: c\n1e6: d\n0.00001: e\n~x: f\noff: g\n100000.0: h\n");
        assert_eq!(
            v,
            json!({"true": "a", "16": "b", "1.5": "c", "1e+06": "d", "1e-05": "e", "~x": "f",
                   "false": "g", "100000": "h"})
        );
        for bad in [
            "~: a\n",
            "null: a\n",
            "18446744073709551615: a\n",
            "[a]: b\n",
            "yes: a\ntrue: b\n",
            "1: a\n'1': b\n",
        ] {
            assert!(documents(bad).is_err(), "{bad}");
        }
        assert_eq!(go_format_g32(123_456_789.0), "1.2345679e+08");
        assert_eq!(go_format_g32(0.0001), "0.0001");
        assert_eq!(go_format_g32(-2.5), "-2.5");
        assert_eq!(go_format_g32(1e39), ".inf");
    }

    #[test]
    fn anchors_aliases_merges_and_documents() {
        let docs = documents(
            "base: &b {mode: 0400, keep: yes}\nx:\n  <<: *b\n  keep: no\nz: *b\ny: 1\n---\n---\n- &n 0x10\n- *n\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0]["x"], json!({"mode": 256, "keep": false}));
        assert_eq!(docs[0]["z"], json!({"mode": 256, "keep": true}));
        // The Norway problem, as kubectl has it: the key `y` is `true`.
        assert_eq!(docs[0]["true"], json!(1));
        assert_eq!(docs[1], Value::Null);
        assert_eq!(docs[2], json!([16, 16]));
        let list = one(
            "a: &a {p: 1, k: a}\nb: &b {p: 2, q: 2}\nc: {<<: [*a, *b], r: 3}\nd: {k: mine, <<: [*a, *b]}\ne: {keep: no, <<: {keep: yes}}\n",
        );
        assert_eq!(list["c"], json!({"p": 1, "k": "a", "q": 2, "r": 3}));
        // go-yaml v2 (and so kubectl) merges where `<<` is written.
        assert_eq!(list["d"], json!({"p": 1, "k": "a", "q": 2}));
        assert_eq!(list["e"], json!({"keep": true}));
        assert!(documents("a: {<<: 1}\n").is_err());
        assert!(documents("a: .inf\n").is_err());
    }

    #[test]
    fn alias_expansion_is_bounded() {
        let mut text = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
        let mut prev = "a".to_owned();
        for i in 0..7 {
            let name = format!("l{i}");
            text.push_str(&format!(
                "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
            prev = name;
        }
        let err = documents(&text).unwrap_err();
        assert!(err.contains("nodes once aliases are expanded"), "{err}");
    }
}
