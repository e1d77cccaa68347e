//! Python values, printed as Python prints them: `str()` / `repr()` (the `string` filter,
//! `{{ value }}`, LFM2.5's tool-call arguments) and `json.dumps` (transformers' `tojson`
//! filter, the `arguments` of a parsed tool call). A template or a tool call holds these and
//! nothing else, so exact output means exact Python formatting: float digits and exponents,
//! quote choice and escapes in `repr`, `", "` / `": "` separators, non-ASCII kept.

use std::fmt::Write;

/// A Python value: what a JSON request or a Python literal holds.
#[derive(Clone, Debug, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<PyValue>),
    Tuple(Vec<PyValue>),
    /// Entries in insertion order (a Python dict keeps it).
    Dict(Vec<(PyValue, PyValue)>),
    /// A value with no Python counterpart (a template object): its text and type name.
    Opaque(String, &'static str),
}

/// The options of `json.dumps` that transformers' `tojson` filter exposes.
#[derive(Clone, Debug)]
pub struct JsonStyle {
    pub ensure_ascii: bool,
    /// The indent unit; `None` keeps everything on one line.
    pub indent: Option<String>,
    pub item_separator: String,
    pub key_separator: String,
    pub sort_keys: bool,
}

impl Default for JsonStyle {
    /// `json.dumps(x, ensure_ascii=False)`: one line, `", "` and `": "`.
    fn default() -> Self {
        JsonStyle::new(false, None, None, false)
    }
}

impl JsonStyle {
    /// As `json.dumps` builds it: without `separators`, `(", ", ": ")` on one line and
    /// `(",", ": ")` with an indent.
    pub fn new(
        ensure_ascii: bool,
        indent: Option<String>,
        separators: Option<(String, String)>,
        sort_keys: bool,
    ) -> Self {
        let (item_separator, key_separator) = separators.unwrap_or_else(|| {
            let item = if indent.is_some() { "," } else { ", " };
            (item.to_string(), ": ".to_string())
        });
        JsonStyle {
            ensure_ascii,
            indent,
            item_separator,
            key_separator,
            sort_keys,
        }
    }
}

impl PyValue {
    /// Python's `str(value)`: a string as it is, anything else as its `repr`.
    pub fn to_py_str(&self) -> String {
        match self {
            PyValue::Str(s) => s.clone(),
            other => other.repr(),
        }
    }

    /// Python's `repr(value)`.
    pub fn repr(&self) -> String {
        let mut out = String::new();
        self.write_repr(&mut out);
        out
    }

    fn write_repr(&self, out: &mut String) {
        match self {
            PyValue::None => out.push_str("None"),
            PyValue::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
            PyValue::Int(i) => write!(out, "{i}").expect("write to String"),
            PyValue::Float(f) => out.push_str(&float_repr(*f)),
            PyValue::Str(s) => str_repr(s, out),
            PyValue::List(items) => {
                out.push('[');
                write_joined(out, items, |out, v| v.write_repr(out));
                out.push(']');
            }
            PyValue::Tuple(items) => {
                out.push('(');
                write_joined(out, items, |out, v| v.write_repr(out));
                if items.len() == 1 {
                    out.push(',');
                }
                out.push(')');
            }
            PyValue::Dict(entries) => {
                out.push('{');
                write_joined(out, entries, |out, (k, v)| {
                    k.write_repr(out);
                    out.push_str(": ");
                    v.write_repr(out);
                });
                out.push('}');
            }
            PyValue::Opaque(text, _) => out.push_str(text),
        }
    }

    /// `json.dumps(value, ...)` with `style`; the error is Python's `TypeError` message.
    pub fn to_json(&self, style: &JsonStyle) -> Result<String, String> {
        let mut out = String::new();
        self.write_json(style, 0, &mut out)?;
        Ok(out)
    }

    fn write_json(&self, style: &JsonStyle, depth: usize, out: &mut String) -> Result<(), String> {
        match self {
            PyValue::None => out.push_str("null"),
            PyValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            PyValue::Int(i) => write!(out, "{i}").expect("write to String"),
            PyValue::Float(f) => out.push_str(&json_float(*f)),
            PyValue::Str(s) => json_string(s, style.ensure_ascii, out),
            PyValue::List(items) | PyValue::Tuple(items) => {
                let items: Vec<_> = items.iter().map(|v| (None, v)).collect();
                write_json_container(style, depth, out, ('[', ']'), &items)?;
            }
            PyValue::Dict(entries) => {
                let mut items = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    items.push((Some(json_key(k)?), v));
                }
                if style.sort_keys {
                    items.sort_by(|a, b| a.0.cmp(&b.0));
                }
                write_json_container(style, depth, out, ('{', '}'), &items)?;
            }
            PyValue::Opaque(_, ty) => {
                return Err(format!("Object of type {ty} is not JSON serializable"))
            }
        }
        Ok(())
    }

    /// Sets `key` in a dict's entries as Python does: a repeated key keeps its first
    /// position and takes the last value.
    pub fn dict_insert(entries: &mut Vec<(PyValue, PyValue)>, key: PyValue, value: PyValue) {
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value,
            None => entries.push((key, value)),
        }
    }
}

fn write_joined<T>(out: &mut String, items: &[T], mut each: impl FnMut(&mut String, &T)) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        each(out, item);
    }
}

/// A JSON array (`key` None) or object, laid out as `json.dumps` does with `style`.
fn write_json_container(
    style: &JsonStyle,
    depth: usize,
    out: &mut String,
    (open, close): (char, char),
    items: &[(Option<String>, &PyValue)],
) -> Result<(), String> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(unit) = &style.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(unit);
            }
        }
    };
    for (i, (key, value)) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&style.item_separator);
        }
        newline(out, depth + 1);
        if let Some(k) = key {
            json_string(k, style.ensure_ascii, out);
            out.push_str(&style.key_separator);
        }
        value.write_json(style, depth + 1, out)?;
    }
    newline(out, depth);
    out.push(close);
    Ok(())
}

/// A dict key as `json.dumps` converts it.
fn json_key(k: &PyValue) -> Result<String, String> {
    Ok(match k {
        PyValue::Str(s) => s.clone(),
        PyValue::Int(i) => i.to_string(),
        PyValue::Float(f) => json_float(*f),
        PyValue::Bool(b) => (if *b { "true" } else { "false" }).to_string(),
        PyValue::None => "null".to_string(),
        other => {
            return Err(format!(
                "keys must be str, int, float, bool or None, not {}",
                other.type_name()
            ))
        }
    })
}

impl PyValue {
    /// Python's type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::None => "NoneType",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "str",
            PyValue::List(_) => "list",
            PyValue::Tuple(_) => "tuple",
            PyValue::Dict(_) => "dict",
            PyValue::Opaque(_, ty) => ty,
        }
    }
}

/// `float.__repr__`: the shortest digits that round-trip, positional while the decimal
/// exponent is in [-4, 16), else `d.ddde±XX`.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return (if x < 0.0 { "-inf" } else { "inf" }).into();
    }
    // Rust's `{:e}` prints the same shortest round-trip digits Python's repr chooses.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let point = exp + 1; // the decimal point's place after the first digit: 0.DIGITS x 10^point
    let n = digits.len() as i32;
    let body = if !(-4 < point && point <= 16) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{first}{frac}e{sign}{:02}", exp.abs())
    } else if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point >= n {
        format!("{digits}{}.0", "0".repeat((point - n) as usize))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    };
    if negative {
        format!("-{body}")
    } else {
        body
    }
}

/// A float in `json.dumps`: its repr, with JavaScript's names for the non-finite ones.
fn json_float(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        (if x < 0.0 { "-Infinity" } else { "Infinity" }).into()
    } else {
        float_repr(x)
    }
}

/// A JSON string literal as `json.dumps` writes it: `\" \\ \b \f \n \r \t`, other control
/// characters as `\u00XX`; with `ensure_ascii` every non-ASCII character (and DEL) as
/// `\uXXXX`, astral ones as a surrogate pair.
pub fn json_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (ensure_ascii && !(' '..='~').contains(&c)) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(out, "\\u{u:04x}").expect("write to String");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr` of a string: single quotes unless the text holds `'` and no `"`;
/// backslash, the quote, `\t \n \r` escaped; characters Python does not print as `\xXX`,
/// `\uXXXX` or `\UXXXXXXXX`.
fn str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_printable(c) => out.push(c),
            c if (c as u32) <= 0xff => write!(out, "\\x{:02x}", c as u32).expect("write"),
            c if (c as u32) <= 0xffff => write!(out, "\\u{:04x}", c as u32).expect("write"),
            c => write!(out, "\\U{:08x}", c as u32).expect("write"),
        }
    }
    out.push(quote);
}

/// Python's `str.isprintable` for one character: not a control, format, separator (other
/// than the space), private-use or non-character code point. Unassigned code points, which
/// Python also escapes, are printed (no Unicode tables here).
fn is_printable(c: char) -> bool {
    let u = c as u32;
    let unprintable = matches!(u,
        0x00..=0x1f | 0x7f..=0xa0 | 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891
        | 0x8e2 | 0x1680 | 0x180e | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064
        | 0x2066..=0x206f | 0x3000 | 0xe000..=0xf8ff | 0xfdd0..=0xfdef | 0xfeff | 0xfff9..=0xfffb
        | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a
        | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..=0x10ffff)
        || (u & 0xfffe) == 0xfffe;
    !unprintable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        for (x, want) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789.123, "123456789.123"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (-1.5e300, "-1.5e+300"),
            (2.5e-7, "2.5e-07"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn reprs_choose_quotes_and_escape_as_python() {
        let s = |x: &str| PyValue::Str(x.into()).repr();
        assert_eq!(s("it's"), "\"it's\"");
        assert_eq!(s("both ' and \""), "'both \\' and \"'");
        assert_eq!(s("a\\b\n\u{7}é\u{a0}🦀"), "'a\\\\b\\n\\x07é\\xa0🦀'");
        let v = PyValue::List(vec![
            PyValue::Bool(true),
            PyValue::None,
            PyValue::Tuple(vec![PyValue::Int(1)]),
            PyValue::Dict(vec![(PyValue::Str("k".into()), PyValue::Float(2.0))]),
        ]);
        assert_eq!(v.repr(), "[True, None, (1,), {'k': 2.0}]");
    }

    #[test]
    fn json_matches_json_dumps() {
        let v = PyValue::Dict(vec![
            (PyValue::Str("b".into()), PyValue::Str("é\"\u{1}".into())),
            (
                PyValue::Int(1),
                PyValue::List(vec![PyValue::Float(1e16), PyValue::None]),
            ),
            (PyValue::Str("e".into()), PyValue::Dict(vec![])),
        ]);
        let dumps = |style: JsonStyle| v.to_json(&style).unwrap();
        assert_eq!(
            dumps(JsonStyle::default()),
            r#"{"b": "é\"\u0001", "1": [1e+16, null], "e": {}}"#
        );
        assert_eq!(
            dumps(JsonStyle::new(true, Some("  ".into()), None, true)),
            "{\n  \"1\": [\n    1e+16,\n    null\n  ],\n  \"b\": \"\\u00e9\\\"\\u0001\",\n  \"e\": {}\n}"
        );
        let bad = PyValue::Dict(vec![(PyValue::Tuple(vec![]), PyValue::None)]);
        assert!(bad.to_json(&JsonStyle::default()).is_err());
    }
}
