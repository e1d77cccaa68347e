//! A minijinja environment that renders chat templates as transformers' jinja2 one does
//! (`_compile_jinja_template`): `trim_blocks` and `lstrip_blocks` on, loop controls, its
//! `tojson` (`json.dumps` with `ensure_ascii=False`), `raise_exception`, `strftime_now`,
//! `{% generation %}` blocks rendered as they are, Python's string methods (minijinja-contrib's
//! pycompat), and values printed as Python's `str()` prints them (`True`, `None`, `1e+16`).

use std::borrow::Cow;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::ValueKind;
use minijinja::value::{from_args, Kwargs};
use minijinja::{AutoEscape, Environment, Error as JinjaError, ErrorKind, State, Value};

use super::pyvalue::{JsonStyle, PyValue};
use super::strftime::DateTime;

/// The error `raise_exception(message)` raises, told apart from the template's own errors.
#[derive(Debug)]
pub struct Raised;

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("raised by the template")
    }
}

impl std::error::Error for Raised {}

/// The message of a `raise_exception` in `e`'s chain, if that is what failed.
pub fn raised_message(e: &JinjaError) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(j) = err.downcast_ref::<JinjaError>() {
            if std::error::Error::source(j).is_some_and(|s| s.is::<Raised>()) {
                return Some(j.detail().unwrap_or_default().to_string());
            }
        }
        cur = err.source();
    }
    None
}

/// An environment configured as transformers configures jinja2, without templates.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .expect("the default delimiters are valid");
    env.set_syntax(syntax);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_formatter(|out, _state, value| {
        let text: Cow<str> = match value.as_str() {
            Some(s) => Cow::Borrowed(s),
            None if value.is_undefined() => Cow::Borrowed(""),
            None => Cow::Owned(to_py(value).to_py_str()),
        };
        out.write_str(&text)
            .map_err(|_| JinjaError::from(ErrorKind::WriteFailure))
    });
    env.set_unknown_method_callback(python_method);
    env.add_filter("tojson", tojson);
    env.add_filter("string", |v: &Value| py_string(v));
    env.add_filter("trim", |v: &Value, chars: Option<String>| {
        py_strip(&py_string(v), chars.as_deref(), true, true).to_string()
    });
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<Value, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, msg).with_source(Raised))
        },
    );
    env.add_function("strftime_now", |format: String| {
        DateTime::now().strftime(&format)
    });
    env
}

/// `template` with transformers' `{% generation %}` / `{% endgeneration %}` tags (its
/// AssistantTracker extension, which renders the body as it is) written as an always-true
/// `if` block, keeping each tag's whitespace control (`-`, `+`).
pub fn rewrite_generation_tags(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("{%") {
        let (before, tag) = rest.split_at(at);
        out.push_str(before);
        let inner = &tag[2..];
        let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
        let word_at = tag.len() - inner.trim_start().len();
        let word = &tag[word_at..];
        let (name, replacement) = if let Some(r) = word.strip_prefix("endgeneration") {
            (r, "endif")
        } else if let Some(r) = word.strip_prefix("generation") {
            (r, "if true")
        } else {
            out.push_str("{%");
            rest = &tag[2..];
            continue;
        };
        let closes = name
            .trim_start()
            .trim_start_matches(['-', '+'])
            .starts_with("%}");
        if closes && name.starts_with([' ', '\t', '\n', '\r', '-', '+', '%']) {
            out.push_str(&tag[..word_at]);
            out.push_str(replacement);
            rest = name;
        } else {
            out.push_str("{%");
            rest = &tag[2..];
        }
    }
    out.push_str(rest);
    out
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`: `json.dumps` with those arguments, positional or by name.
fn tojson(
    value: &Value,
    args: minijinja::value::Rest<Value>,
    kwargs: Kwargs,
) -> Result<String, JinjaError> {
    let names = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > names.len() {
        return Err(JinjaError::new(
            ErrorKind::TooManyArguments,
            "tojson takes at most 4 arguments",
        ));
    }
    let arg = |i: usize| -> Result<Option<Value>, JinjaError> {
        let named: Option<Value> = kwargs.get(names[i])?;
        Ok(named
            .or_else(|| args.get(i).cloned())
            .filter(|v| !v.is_none()))
    };
    let ensure_ascii = arg(0)?.is_some_and(|v| v.is_true());
    let indent = arg(1)?.map(|v| match v.as_str() {
        Some(s) => s.to_string(),
        None => " ".repeat(v.as_usize().unwrap_or(0)),
    });
    let separators = match arg(2)? {
        Some(v) => {
            let (item, key): (String, String) = from_args(&v.try_iter()?.collect::<Vec<_>>())?;
            Some((item, key))
        }
        None => None,
    };
    let sort_keys = arg(3)?.is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let style = JsonStyle::new(ensure_ascii, indent, separators, sort_keys);
    to_py(value)
        .to_json(&style)
        .map_err(|msg| JinjaError::new(ErrorKind::InvalidOperation, msg))
}

/// pycompat's Python methods, with `strip` / `lstrip` / `rstrip` using Python's whitespace.
fn python_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, JinjaError> {
    if let (Some(s), "strip" | "lstrip" | "rstrip") = (value.as_str(), method) {
        let (chars,): (Option<String>,) = from_args(args)?;
        let left = method != "rstrip";
        let right = method != "lstrip";
        return Ok(Value::from(py_strip(s, chars.as_deref(), left, right)));
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Python's `str.strip(chars)` (both ends, or one): whitespace as `str.isspace` has it,
/// which adds the information separators U+001C..U+001F to Rust's.
fn py_strip<'a>(s: &'a str, chars: Option<&str>, left: bool, right: bool) -> &'a str {
    let strip = |c: char| match chars {
        Some(set) => set.contains(c),
        None => c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c),
    };
    let s = if left { s.trim_start_matches(strip) } else { s };
    if right {
        s.trim_end_matches(strip)
    } else {
        s
    }
}

/// jinja2's `string` filter: Python's `str()`, and "" for an undefined value.
fn py_string(v: &Value) -> String {
    match v.as_str() {
        Some(s) => s.to_string(),
        None if v.is_undefined() => String::new(),
        None => to_py(v).to_py_str(),
    }
}

/// The Python value a template value stands for.
pub fn to_py(v: &Value) -> PyValue {
    match v.kind() {
        ValueKind::None => PyValue::None,
        ValueKind::Bool => PyValue::Bool(v.is_true()),
        ValueKind::Number if v.is_integer() => match i128::try_from(v.clone()) {
            Ok(i) => PyValue::Int(i),
            Err(_) => PyValue::Opaque(v.to_string(), "int"),
        },
        ValueKind::Number => PyValue::Float(f64::try_from(v.clone()).unwrap_or(f64::NAN)),
        ValueKind::String => PyValue::Str(v.as_str().unwrap_or_default().to_string()),
        ValueKind::Seq | ValueKind::Iterable => {
            let items = v.try_iter().map(|it| it.map(|x| to_py(&x)).collect());
            match items {
                Ok(items) if v.is_tuple() => PyValue::Tuple(items),
                Ok(items) => PyValue::List(items),
                Err(_) => PyValue::Opaque(v.to_string(), "object"),
            }
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            if let Ok(keys) = v.try_iter() {
                for k in keys {
                    let item = v.get_item(&k).unwrap_or_default();
                    PyValue::dict_insert(&mut entries, to_py(&k), to_py(&item));
                }
            }
            PyValue::Dict(entries)
        }
        ValueKind::Undefined => PyValue::Opaque(String::new(), "Undefined"),
        _ => PyValue::Opaque(v.to_string(), "object"),
    }
}

/// A JSON value as a template value, objects keeping their key order.
pub fn from_json(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            _ => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::from(s.as_str()),
        J::Array(items) => Value::from(items.iter().map(from_json).collect::<Vec<_>>()),
        J::Object(map) => Value::from_pairs(map.iter().map(|(k, v)| (k.as_str(), from_json(v)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, ctx: Value) -> Result<String, JinjaError> {
        let mut env = environment();
        env.add_template_owned("t", rewrite_generation_tags(src))?;
        env.get_template("t")?.render(ctx)
    }

    #[test]
    fn generation_tags_keep_their_whitespace_control() {
        assert_eq!(
            rewrite_generation_tags("a{%- generation -%}b{% endgeneration %}{%generation%}{%+ endgeneration +%}{% if generations %}"),
            "a{%- if true -%}b{% endif %}{%if true%}{%+ endif +%}{% if generations %}"
        );
        assert_eq!(
            render(
                "x\n  {% generation %}\ny{% endgeneration %}\n",
                Value::UNDEFINED
            )
            .unwrap(),
            "x\ny"
        );
    }

    #[test]
    fn values_print_as_python_prints_them() {
        let ctx = from_json(
            &serde_json::json!({"v": [true, null, 1.0, 1e16, "it's"], "m": {"b": 1, "a": 2}}),
        );
        let out = render("{{ v }}|{{ v[0] }}|{{ v | string }}|{{ m | tojson }}|{{ m.items() | list | tojson }}|{{ v | tojson(indent=1) }}", ctx).unwrap();
        assert_eq!(
            out,
            "[True, None, 1.0, 1e+16, \"it's\"]|True|[True, None, 1.0, 1e+16, \"it's\"]|{\"b\": 1, \"a\": 2}|[[\"b\", 1], [\"a\", 2]]|[\n true,\n null,\n 1.0,\n 1e+16,\n \"it's\"\n]"
        );
    }

    #[test]
    fn python_methods_and_raise_exception() {
        let ctx = from_json(&serde_json::json!({"s": "\u{1f} a b </think> c \u{1c}"}));
        let out = render(
            "{{ s.strip() }}|{{ s.split('</think>')[-1] | trim }}|{{ s.startswith('\u{1f}') }}",
            ctx,
        )
        .unwrap();
        assert_eq!(out, "a b </think> c|c|True");
        let err = render(
            "{{ raise_exception('roles must alternate') }}",
            Value::UNDEFINED,
        )
        .unwrap_err();
        assert_eq!(
            raised_message(&err).as_deref(),
            Some("roles must alternate")
        );
        let err = render("{{ undefined_thing | tojson }}", Value::UNDEFINED).unwrap_err();
        assert!(raised_message(&err).is_none());
        assert!(
            err.to_string()
                .contains("Undefined is not JSON serializable"),
            "{err}"
        );
    }
}
