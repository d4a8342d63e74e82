//! Environment-variable substitution, done on the raw text before YAML parsing.
//!
//! Feast runs `os.path.expandvars` over the whole file. That replaces `$NAME`
//! (ASCII word characters) and `${NAME}` when the variable is set, leaves both
//! untouched when it is not, and has no `${NAME:-default}` form. feast-rs keeps
//! the same syntax but is stricter about `${NAME}`: outside comments an unset
//! braced variable, or a braced default/alternative form, is an error naming the
//! variable and its line. A bare `$NAME` that is unset is left as is, as Feast
//! does, because `$` followed by letters is common in passwords.
//!
//! The substituted text can contain more lines than the original when a value
//! holds newlines, so the result carries a [`LineMap`] that translates positions
//! reported by the YAML parser back to the original file.

/// A reference that could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnvError {
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub missing: bool,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    out_col: usize,
    src_col: usize,
    literal: bool,
}

#[derive(Debug, Clone)]
struct OutLine {
    src_line: usize,
    segments: Vec<Segment>,
}

/// Maps 1-based (line, column) positions in the substituted text back to the original.
#[derive(Debug, Clone, Default)]
pub(crate) struct LineMap {
    lines: Vec<OutLine>,
}

impl LineMap {
    pub fn map(&self, line: usize, column: usize) -> (usize, usize) {
        let Some(idx) = line.checked_sub(1) else {
            return (line, column);
        };
        let Some(out) = self.lines.get(idx) else {
            // Past the end (an end-of-stream mark): keep the distance to the last line.
            return match self.lines.last() {
                Some(last) => (last.src_line + (idx + 1 - self.lines.len()), column),
                None => (line, column),
            };
        };
        let col0 = column.saturating_sub(1);
        let seg = out
            .segments
            .iter()
            .rev()
            .find(|s| s.out_col <= col0)
            .copied()
            .unwrap_or(Segment {
                out_col: 0,
                src_col: 0,
                literal: true,
            });
        let src_col0 = if seg.literal {
            seg.src_col + (col0 - seg.out_col)
        } else {
            seg.src_col
        };
        (out.src_line, src_col0 + 1)
    }
}

/// Column (in chars) where a YAML comment starts on this line, if any.
/// A `#` starts a comment at the start of a line or after whitespace, outside quotes.
fn comment_start(line: &[char]) -> Option<usize> {
    let mut in_single = false;
    let mut in_double = false;
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        if in_double {
            if c == '\\' {
                i += 1;
            } else if c == '"' {
                in_double = false;
            }
        } else if in_single {
            if c == '\'' {
                if line.get(i + 1) == Some(&'\'') {
                    i += 1;
                } else {
                    in_single = false;
                }
            }
        } else if c == '#' && (i == 0 || line[i - 1].is_whitespace()) {
            return Some(i);
        } else if c == '"' {
            in_double = true;
        } else if c == '\'' {
            in_single = true;
        }
        i += 1;
    }
    None
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

struct Builder {
    text: String,
    lines: Vec<OutLine>,
    out_col: usize,
}

impl Builder {
    fn start_line(&mut self, src_line: usize) {
        self.lines.push(OutLine {
            src_line,
            segments: vec![Segment {
                out_col: 0,
                src_col: 0,
                literal: true,
            }],
        });
        self.out_col = 0;
    }

    fn segment(&mut self, src_col: usize, literal: bool) {
        let out_col = self.out_col;
        if let Some(l) = self.lines.last_mut() {
            l.segments.push(Segment {
                out_col,
                src_col,
                literal,
            });
        }
    }

    fn push_literal(&mut self, c: char) {
        self.text.push(c);
        self.out_col += 1;
    }

    /// Push a substituted value; newlines inside it open new output lines that
    /// still map to the same source position.
    fn push_value(&mut self, value: &str, src_line: usize, src_col: usize) {
        self.segment(src_col, false);
        for c in value.chars() {
            self.text.push(c);
            if c == '\n' {
                self.start_line(src_line);
                if let Some(l) = self.lines.last_mut() {
                    l.segments[0].src_col = src_col;
                    l.segments[0].literal = false;
                }
            } else {
                self.out_col += 1;
            }
        }
    }
}

/// Substitute `${NAME}` / `$NAME` references using `lookup`.
pub(crate) fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, LineMap), EnvError> {
    let mut b = Builder {
        text: String::with_capacity(text.len()),
        lines: Vec::new(),
        out_col: 0,
    };
    for (line_idx, raw_line) in text.split_inclusive('\n').enumerate() {
        let src_line = line_idx + 1;
        b.start_line(src_line);
        let chars: Vec<char> = raw_line.chars().collect();
        let comment = comment_start(&chars);
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c != '$' {
                b.push_literal(c);
                i += 1;
                continue;
            }
            let in_comment = comment.is_some_and(|cs| i > cs);
            if chars.get(i + 1) == Some(&'{') {
                let close = chars[i + 2..].iter().position(|&c| c == '}');
                let Some(close) = close else {
                    b.push_literal(c);
                    i += 1;
                    continue;
                };
                let end = i + 2 + close; // index of '}'
                let name: String = chars[i + 2..end].iter().collect();
                if name.is_empty() {
                    b.push_literal(c);
                    i += 1;
                    continue;
                }
                match lookup(&name) {
                    Some(value) => {
                        b.push_value(&value, src_line, i);
                        i = end + 1;
                        b.segment(i, true);
                    }
                    None if in_comment => {
                        b.push_literal(c);
                        i += 1;
                    }
                    None => {
                        let message = if let Some(pos) = name.find([':', '-', '+', '=', '?']) {
                            format!(
                                "`${{{name}}}`: shell-style defaults and alternatives are not supported; \
                                 Feast (os.path.expandvars) only substitutes `${{{}}}` and `${}`",
                                &name[..pos],
                                &name[..pos]
                            )
                        } else {
                            format!(
                                "environment variable `{name}` is not set (referenced as `${{{name}}}`)"
                            )
                        };
                        return Err(EnvError {
                            line: src_line,
                            column: i + 1,
                            message,
                            missing: true,
                        });
                    }
                }
                continue;
            }
            let len = chars[i + 1..].iter().take_while(|&&c| is_word(c)).count();
            if len == 0 {
                b.push_literal(c);
                i += 1;
                continue;
            }
            let name: String = chars[i + 1..i + 1 + len].iter().collect();
            match lookup(&name) {
                Some(value) => {
                    b.push_value(&value, src_line, i);
                    i += 1 + len;
                    b.segment(i, true);
                }
                None => {
                    b.push_literal(c);
                    i += 1;
                }
            }
        }
    }
    Ok((b.text, LineMap { lines: b.lines }))
}

/// The process environment, as a lookup function.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.example".into()),
            "MULTI" => Some("a\nb\nc".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_braced_and_bare() {
        let (out, _) = substitute("a: ${HOST}:5432\nb: $HOST/x\nc: $NOPE\n", &env).unwrap();
        assert_eq!(out, "a: db.example:5432\nb: db.example/x\nc: $NOPE\n");
    }

    #[test]
    fn unset_braced_is_an_error_with_position() {
        let err = substitute("a: 1\nb: x${NOPE}\n", &env).unwrap_err();
        assert_eq!((err.line, err.column), (2, 5));
        assert!(err.message.contains("`NOPE`"), "{}", err.message);
    }

    #[test]
    fn unset_in_comment_is_kept() {
        let (out, _) = substitute("a: 1 # see ${NOPE}\n# ${NOPE}\nb: '#${HOST}'\n", &env).unwrap();
        assert_eq!(out, "a: 1 # see ${NOPE}\n# ${NOPE}\nb: '#db.example'\n");
        assert!(substitute("b: '# ${NOPE}'\n", &env).is_err());
    }

    #[test]
    fn defaults_are_rejected() {
        let err = substitute("a: ${NOPE:-x}\n", &env).unwrap_err();
        assert!(err.message.contains("not supported"), "{}", err.message);
    }

    #[test]
    fn line_map_survives_multiline_values() {
        let (out, map) = substitute("x: \"${MULTI}\"\ny: ${EMPTY}z\nw: 1\n", &env).unwrap();
        assert_eq!(out, "x: \"a\nb\nc\"\ny: z\nw: 1\n");
        // output line 3 is the tail of the value, still source line 1
        assert_eq!(map.map(3, 1), (1, 5));
        // the closing quote on output line 3, column 2 is source column 13
        assert_eq!(map.map(3, 2), (1, 13));
        // `z` sits at output column 4 on line 4, source column 12 on line 2
        assert_eq!(map.map(4, 4), (2, 12));
        assert_eq!(map.map(5, 1), (3, 1));
    }
}
