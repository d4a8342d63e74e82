//! Output helpers: aligned plain tables (like `tabulate(..., tablefmt="plain")`, which Feast's
//! CLI uses), protobuf JSON and YAML.

/// Renders rows under headers, columns left-aligned and separated by two spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if i + 1 < cells.len() {
                text.push_str(&" ".repeat(widths[i].saturating_sub(cell.chars().count())));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// YAML for a JSON value, as `yaml.dump(..., sort_keys=False)` would show it.
pub fn yaml(value: &serde_json::Value) -> String {
    serde_norway::to_string(value).unwrap_or_else(|_| value.to_string())
}

/// A Python-style set/list repr for names: `{'a', 'b'}`.
pub fn python_set(items: &[&str]) -> String {
    let inner: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// A Python-style list repr: `['a', 'b']`.
pub fn python_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    format!("[{}]", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let t = table(
            &["NAME", "TYPE"],
            &[
                vec!["driver_hourly_stats".into(), "FeatureView".into()],
                vec!["x".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME                 TYPE\ndriver_hourly_stats  FeatureView\nx\n"
        );
    }
}
