//! The Python call syntax LFM2 writes tool calls in, `[f(a='x', b=[1, 2]), pkg.g(c={"k":
//! None})]`, read by hand: a list (or bare comma-separated sequence) of calls with keyword
//! arguments whose values are Python literals (strings in either quote style with their
//! escapes, raw and triple-quoted strings, adjacent strings joined, ints in any base with
//! underscores, floats, True / False / None, lists, tuples, dicts, nested, a sign on
//! numbers), JSON's true / false / null too. An item may also be a JSON-style
//! `{"name": ..., "arguments": {...}}`. Anything else (positional arguments, names, sets,
//! bytes, f-strings, a repeated keyword) makes the whole text not a call: `None`, never an
//! error.

use super::pyvalue::{JsonStyle, PyValue};

/// One parsed call: the (dotted) function name and its keyword arguments as a JSON object
/// text, written as `json.dumps(arguments, ensure_ascii=False)` writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: String,
}

/// Nesting deeper than this is not a call (and keeps the recursion bounded).
const MAX_DEPTH: usize = 64;

/// The calls `text` holds, or `None` when it is not entirely a list of calls.
pub fn parse_calls(text: &str) -> Option<Vec<ToolCall>> {
    let mut c = Cursor {
        s: text,
        pos: 0,
        depth: 0,
    };
    c.skip_ws();
    let bracketed = c.eat('[');
    let mut calls = Vec::new();
    loop {
        c.skip_ws();
        if bracketed && c.eat(']') {
            break;
        }
        if !bracketed && c.at_end() && !calls.is_empty() {
            break;
        }
        calls.push(c.item()?);
        c.skip_ws();
        if !c.eat(',') {
            if bracketed && !c.eat(']') {
                return None;
            }
            break;
        }
    }
    c.skip_ws();
    c.at_end().then_some(calls)
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
    depth: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.s[self.pos..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.pos += c.len_utf8();
        }
        hit
    }

    fn at_end(&self) -> bool {
        self.pos == self.s.len()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn ident(&mut self) -> Option<&str> {
        let start = self.pos;
        if !self.peek().is_some_and(|c| c.is_alphabetic() || c == '_') {
            return None;
        }
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.bump();
        }
        Some(&self.s[start..self.pos])
    }

    /// A call `name(k=v, ...)`, or a JSON-style `{"name": ..., "arguments": {...}}`.
    fn item(&mut self) -> Option<ToolCall> {
        let (name, arguments) = if self.peek() == Some('{') {
            let PyValue::Dict(entries) = self.value()? else {
                return None;
            };
            let get = |k: &str| {
                entries
                    .iter()
                    .find(|e| e.0 == PyValue::Str(k.into()))
                    .map(|e| &e.1)
            };
            match (get("name")?, get("arguments")?) {
                (PyValue::Str(n), args @ PyValue::Dict(_)) => (n.clone(), args.clone()),
                _ => return None,
            }
        } else {
            let mut name = self.ident()?.to_string();
            while self.eat('.') {
                name.push('.');
                name.push_str(self.ident()?);
            }
            self.skip_ws();
            (name, self.keyword_arguments()?)
        };
        let arguments = arguments.to_json(&JsonStyle::default()).ok()?;
        Some(ToolCall { name, arguments })
    }

    /// `(k=v, ...)` as a dict; a repeated keyword is not a call, as in Python.
    fn keyword_arguments(&mut self) -> Option<PyValue> {
        if !self.eat('(') {
            return None;
        }
        let mut args = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(')') {
                break;
            }
            let key = PyValue::Str(self.ident()?.to_string());
            self.skip_ws();
            if !self.eat('=') || args.iter().any(|(k, _)| *k == key) {
                return None;
            }
            self.skip_ws();
            let v = self.value()?;
            args.push((key, v));
            self.skip_ws();
            if !self.eat(',') {
                self.skip_ws();
                if !self.eat(')') {
                    return None;
                }
                break;
            }
        }
        Some(PyValue::Dict(args))
    }

    /// A Python literal.
    fn value(&mut self) -> Option<PyValue> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        let v = self.value_inner();
        self.depth -= 1;
        v
    }

    fn value_inner(&mut self) -> Option<PyValue> {
        match self.peek()? {
            '[' => {
                self.bump();
                Some(PyValue::List(self.sequence(']')?.0))
            }
            '(' => {
                self.bump();
                let (items, comma) = self.sequence(')')?;
                Some(match (items.len(), comma) {
                    (1, false) => items.into_iter().next()?,
                    _ => PyValue::Tuple(items),
                })
            }
            '{' => self.dict(),
            '\'' | '"' => self.strings(),
            c if c.is_ascii_digit() || matches!(c, '-' | '+' | '.') => self.number(),
            _ => self.word(),
        }
    }

    /// Items up to `close`; also whether a comma followed the last one (`(1,)` is a tuple).
    fn sequence(&mut self, close: char) -> Option<(Vec<PyValue>, bool)> {
        let mut items = Vec::new();
        let mut comma = false;
        loop {
            self.skip_ws();
            if self.eat(close) {
                return Some((items, comma));
            }
            items.push(self.value()?);
            self.skip_ws();
            comma = self.eat(',');
            if !comma {
                self.skip_ws();
                return self.eat(close).then_some((items, false));
            }
        }
    }

    fn dict(&mut self) -> Option<PyValue> {
        self.bump();
        let mut entries = Vec::new();
        loop {
            self.skip_ws();
            if self.eat('}') {
                return Some(PyValue::Dict(entries));
            }
            let key = self.value()?;
            if matches!(key, PyValue::List(_) | PyValue::Dict(_)) {
                return None; // unhashable
            }
            self.skip_ws();
            if !self.eat(':') {
                return None; // a set, or not a literal
            }
            self.skip_ws();
            let v = self.value()?;
            PyValue::dict_insert(&mut entries, key, v);
            self.skip_ws();
            if !self.eat(',') {
                self.skip_ws();
                return self.eat('}').then_some(PyValue::Dict(entries));
            }
        }
    }

    /// A keyword literal, or a string with an `r` / `u` prefix.
    fn word(&mut self) -> Option<PyValue> {
        let start = self.pos;
        let word = self.ident()?.to_string();
        let quoted = matches!(self.peek(), Some('\'' | '"'));
        match word.as_str() {
            "True" | "true" => Some(PyValue::Bool(true)),
            "False" | "false" => Some(PyValue::Bool(false)),
            "None" | "null" => Some(PyValue::None),
            "r" | "R" | "u" | "U" if quoted => {
                self.pos = start;
                self.strings()
            }
            _ => None,
        }
    }

    /// One string literal, or several adjacent ones joined.
    fn strings(&mut self) -> Option<PyValue> {
        let mut out = self.string()?;
        loop {
            let save = self.pos;
            self.skip_ws();
            let prefixed = matches!(self.peek(), Some('r' | 'R' | 'u' | 'U'))
                && matches!(self.peek_at(1), Some('\'' | '"'));
            if matches!(self.peek(), Some('\'' | '"')) || prefixed {
                out.push_str(&self.string()?);
            } else {
                self.pos = save;
                return Some(PyValue::Str(out));
            }
        }
    }

    /// A string literal with an optional `r` / `u` prefix, single or triple quoted.
    fn string(&mut self) -> Option<String> {
        let mut raw = false;
        if let Some(p @ ('r' | 'R' | 'u' | 'U')) = self.peek() {
            raw = p == 'r' || p == 'R';
            self.bump();
        }
        let q = self.bump()?;
        let triple = self.peek() == Some(q) && self.peek_at(1) == Some(q);
        if triple {
            self.pos += 2 * q.len_utf8();
        }
        let mut out = String::new();
        loop {
            let c = self.bump()?;
            if c == q {
                if !triple {
                    return Some(out);
                }
                if self.peek() == Some(q) && self.peek_at(1) == Some(q) {
                    self.pos += 2 * q.len_utf8();
                    return Some(out);
                }
                out.push(c);
            } else if c == '\n' && !triple {
                return None;
            } else if c == '\\' && raw {
                out.push(c);
                out.push(self.bump()?);
            } else if c == '\\' {
                self.escape(&mut out)?;
            } else {
                out.push(c);
            }
        }
    }

    /// The escape after a backslash, as Python reads it; unknown ones keep the backslash.
    fn escape(&mut self, out: &mut String) -> Option<()> {
        let c = self.bump()?;
        let simple = match c {
            '\n' => return Some(()),
            '\\' | '\'' | '"' => Some(c),
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            _ => None,
        };
        if let Some(s) = simple {
            out.push(s);
            return Some(());
        }
        let code = match c {
            '0'..='7' => {
                let mut v = c.to_digit(8)?;
                for _ in 0..2 {
                    match self.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            self.bump();
                        }
                        None => break,
                    }
                }
                v
            }
            'x' => self.hex(2)?,
            'u' => self.hex(4)?,
            'U' => self.hex(8)?,
            'N' => return None,
            other => {
                out.push('\\');
                out.push(other);
                return Some(());
            }
        };
        out.push(char::from_u32(code)?);
        Some(())
    }

    fn hex(&mut self, n: usize) -> Option<u32> {
        let digits = self.s.get(self.pos..self.pos + n)?;
        if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += n;
        u32::from_str_radix(digits, 16).ok()
    }

    /// An int or float literal with an optional sign.
    fn number(&mut self) -> Option<PyValue> {
        let negative = self.eat('-');
        if !negative {
            self.eat('+');
        }
        let start = self.pos;
        loop {
            match self.peek() {
                Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '.' => {}
                Some('+' | '-') if is_exponent(&self.s[start..self.pos]) => {}
                _ => break,
            }
            self.bump();
        }
        let v = number_literal(&self.s[start..self.pos])?;
        Some(match (v, negative) {
            (PyValue::Int(i), true) => PyValue::Int(-i),
            (PyValue::Float(f), true) => PyValue::Float(-f),
            (v, _) => v,
        })
    }
}

/// The value of an unsigned Python number literal.
fn number_literal(text: &str) -> Option<PyValue> {
    let lower = text.to_ascii_lowercase();
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(digits) = lower.strip_prefix(prefix) {
            let digits = digits.strip_prefix('_').unwrap_or(digits);
            return i128::from_str_radix(&without_underscores(digits)?, radix)
                .ok()
                .map(PyValue::Int);
        }
    }
    let clean = without_underscores(&lower)?;
    if clean.contains(['.', 'e']) {
        let valid = clean
            .chars()
            .all(|c| c.is_ascii_digit() || "._e+-".contains(c))
            && clean.chars().any(|c| c.is_ascii_digit());
        if !valid {
            return None;
        }
        return clean.parse::<f64>().ok().map(PyValue::Float);
    }
    if !clean.chars().all(|c| c.is_ascii_digit()) || clean.is_empty() {
        return None;
    }
    if clean.len() > 1 && clean.starts_with('0') && clean.chars().any(|c| c != '0') {
        return None; // Python 3 has no leading-zero ints
    }
    clean.parse::<i128>().ok().map(PyValue::Int)
}

/// Whether a decimal literal's text so far ends in its exponent marker (a sign may follow).
fn is_exponent(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.ends_with('e') && !t.starts_with("0x")
}

/// `text` without the underscores Python allows between digits; `None` for misplaced ones.
fn without_underscores(text: &str) -> Option<String> {
    let b = text.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let digit = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
        if c == b'_' && (i == 0 || !digit(i - 1) || !digit(i + 1)) {
            return None;
        }
    }
    Some(text.replace('_', ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(text: &str) -> Vec<(String, String)> {
        parse_calls(text)
            .unwrap_or_else(|| panic!("not parsed: {text}"))
            .into_iter()
            .map(|c| (c.name, c.arguments))
            .collect()
    }

    fn one(args: &str) -> String {
        calls(&format!("[f({args})]")).remove(0).1
    }

    #[test]
    fn calls_with_python_literals() {
        assert_eq!(
            calls("[f(a='x', b=[1, 2]), g(c={\"k\": None})]"),
            [
                ("f".to_string(), r#"{"a": "x", "b": [1, 2]}"#.to_string()),
                ("g".to_string(), r#"{"c": {"k": null}}"#.to_string()),
            ]
        );
        assert_eq!(
            one("t=True, f=False, n=None, j=[true, false, null]"),
            r#"{"t": true, "f": false, "n": null, "j": [true, false, null]}"#
        );
        assert_eq!(
            one("i=-3, p=+4, h=0x1F, o=0o17, b=0b101, u=1_000, f=1.5, e=1e3, s=-.5, z=2., x=1E-7"),
            r#"{"i": -3, "p": 4, "h": 31, "o": 15, "b": 5, "u": 1000, "f": 1.5, "e": 1000.0, "s": -0.5, "z": 2.0, "x": 1e-07}"#
        );
        assert_eq!(
            one(
                r#"a='it\'s', b="say \"hi\"", c='\x41\u00e9\U0001F980\101\n\t\\', d=r'\d+', e='a' "b", f='''x'y''', g='\q'"#
            ),
            r#"{"a": "it's", "b": "say \"hi\"", "c": "Aé🦀A\n\t\\", "d": "\\d+", "e": "ab", "f": "x'y", "g": "\\q"}"#
        );
        assert_eq!(
            one("t=(1, 2), one=(1,), e=(), p=(3), n={'a': [(1, {'b': ()})]}, k={1: 'x'}"),
            r#"{"t": [1, 2], "one": [1], "e": [], "p": 3, "n": {"a": [[1, {"b": []}]]}, "k": {"1": "x"}}"#
        );
    }

    #[test]
    fn names_lists_and_layouts() {
        assert_eq!(calls("[a.b.c()]"), [("a.b.c".into(), "{}".into())]);
        assert_eq!(
            calls(" f(x=1) , g() "),
            [
                ("f".into(), r#"{"x": 1}"#.into()),
                ("g".into(), "{}".into())
            ]
        );
        assert_eq!(
            calls("[\n  f(\n    x='é',\n  ),\n]"),
            [("f".into(), r#"{"x": "é"}"#.into())]
        );
        assert_eq!(calls("[]"), []);
        assert_eq!(
            calls(r#"[{"name": "f", "arguments": {"a": 1}}]"#),
            [("f".into(), r#"{"a": 1}"#.into())]
        );
    }

    #[test]
    fn malformed_text_is_not_a_call() {
        for text in [
            "",
            "hello",
            "[f(1)]",
            "[f(a=1)",
            "[f(a=)]",
            "[f(a=1) g()]",
            "[f(a=x)]",
            "[f(a=1, a=2)]",
            "[f(a={1, 2})]",
            "[f(a=b'x')]",
            "[f(a=f'x')]",
            "[f(a='x)]",
            "[f(a=012)]",
            "[f(a=1__0)]",
            "[f(a=1)] trailing",
            "[f(a='\\N{DASH}')]",
            "[f(a={[1]: 2})]",
            "[f(a=1j)]",
            "[1.x()]",
            "[{\"name\": \"f\"}]",
            "[f(a='line\nbreak')]",
            "[f(a=--1)]",
        ] {
            assert!(parse_calls(text).is_none(), "{text:?} parsed");
        }
        let deep = format!("[f(a={}{})]", "[".repeat(200), "]".repeat(200));
        assert!(parse_calls(&deep).is_none());
    }
}
