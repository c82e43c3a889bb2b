//! `resource.Quantity` as the API server writes it back: `1000m` → `1`, `1024Mi` → `1Gi`,
//! `0.5` → `500m`, `1.5Gi` → `1536Mi`, while strings already in canonical form (`100m`, `12e6`,
//! even `+1` or `01`) are kept as written.
//!
//! The rules, as Kubernetes' apimachinery applies them when it decodes and re-encodes a
//! quantity (re-implemented here from their documented and observed behaviour):
//!
//! * A quantity is a signed decimal number with an optional suffix: binary SI (`Ki` … `Ei`,
//!   powers of 1024), decimal SI (`n`, `u`, `m`, ``, `k`, `M`, `G`, `T`, `P`, `E`) or a decimal
//!   exponent (`e3`, `E-2`). The suffix's family is remembered and used again on output.
//! * A string is kept verbatim when it is already canonical: a decimal value whose exponent is
//!   a multiple of 3 and whose digits neither end in `000` nor start with `0`; a binary value
//!   with a whole-unit suffix whose number is not a multiple of 8.
//! * Otherwise the value is rewritten with the largest exponent (multiple of 3; of 1024 for
//!   binary) that loses no precision and leaves no fractional digits. Binary values below 1024
//!   in magnitude, or not whole, are written in decimal SI instead.
//! * Values finer than nano units are rounded up (away from zero) to 1n; binary values are
//!   capped at 2^63-1.
//! * Values in a `ResourceList` (a map of quantities: requests, limits) are first rounded up to
//!   milli units, as the core/v1 defaulting does (`100u` → `1m`).
//!
//! Numbers written as JSON numbers are first printed as Go prints a float64 (`1e3` → `1000`),
//! as the API server does when it decodes an apply patch.

/// How a quantity's suffix is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `12e6`
    DecimalExponent,
    /// `12Mi`
    BinarySi,
    /// `12M`
    DecimalSi,
}

/// A parsed quantity: `mantissa × 10^exp`, its format and, when the input was canonical, the
/// input itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Quantity {
    mantissa: i128,
    exp: i32,
    format: Format,
    verbatim: Option<String>,
}

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

/// `m × 10^-shift`, rounded away from zero; and whether it was exact.
fn shift_down(m: i128, shift: u32) -> (i128, bool) {
    let Some(d) = pow10(shift) else {
        return (m.signum(), m == 0);
    };
    let (q, r) = (m / d, m % d);
    if r == 0 {
        (q, true)
    } else {
        (q + m.signum(), false)
    }
}

/// The pieces of a quantity string: sign, integer digits (leading zeros dropped), fraction
/// digits and suffix; `None` when it is malformed.
fn scan(s: &str) -> Option<(bool, String, String, String, usize)> {
    let b = s.as_bytes();
    let mut pos = 0;
    let positive = match b.first() {
        Some(b'-') => {
            pos = 1;
            false
        }
        Some(b'+') => {
            pos = 1;
            true
        }
        _ => true,
    };
    while pos < b.len() && b[pos] == b'0' {
        pos += 1;
    }
    if pos >= b.len() {
        return Some((positive, "0".into(), String::new(), String::new(), b.len()));
    }
    let start = pos;
    while pos < b.len() && b[pos].is_ascii_digit() {
        pos += 1;
    }
    let mut num = s[start..pos].to_owned();
    if num.is_empty() {
        num = "0".into();
    }
    let mut denom = String::new();
    if pos < b.len() && b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = s[start..pos].to_owned();
    }
    let number_end = pos;
    let suffix_start = pos;
    while pos < b.len() && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < b.len() && (b[pos] == b'-' || b[pos] == b'+') {
        pos += 1;
    }
    while pos < b.len() {
        if !b[pos].is_ascii_digit() {
            return None;
        }
        pos += 1;
    }
    Some((
        positive,
        num,
        denom,
        s[suffix_start..].to_owned(),
        number_end,
    ))
}

/// (base, exponent, format) of a suffix.
fn suffix(s: &str) -> Option<(u32, i32, Format)> {
    let dec = |e| Some((10, e, Format::DecimalSi));
    let bin = |e| Some((2, e, Format::BinarySi));
    match s {
        "" => dec(0),
        "n" => dec(-9),
        "u" => dec(-6),
        "m" => dec(-3),
        "k" => dec(3),
        "M" => dec(6),
        "G" => dec(9),
        "T" => dec(12),
        "P" => dec(15),
        "E" => dec(18),
        "Ki" => bin(10),
        "Mi" => bin(20),
        "Gi" => bin(30),
        "Ti" => bin(40),
        "Pi" => bin(50),
        "Ei" => bin(60),
        _ if s.len() > 1 && (s.starts_with('e') || s.starts_with('E')) => {
            let e: i64 = s[1..].parse().ok()?;
            Some((10, e as i32, Format::DecimalExponent))
        }
        _ => None,
    }
}

impl Quantity {
    fn parse(s: &str) -> Option<Self> {
        if s.is_empty() {
            return None;
        }
        if s == "0" {
            return Some(Self {
                mantissa: 0,
                exp: 0,
                format: Format::DecimalSi,
                verbatim: Some(s.into()),
            });
        }
        let (positive, num, denom, suf, number_end) = scan(s)?;
        let (base, exponent, format) = suffix(&suf)?;
        let sign = if positive { 1 } else { -1 };
        // Small values: exact integer arithmetic (and the verbatim form when canonical).
        let (precision, mut scale, multiplier) = match format {
            Format::DecimalSi | Format::DecimalExponent => {
                (18 - (num.len() + denom.len()) as i64, exponent, 1i64)
            }
            Format::BinarySi if exponent >= 0 && denom.is_empty() => (
                15 - num.len() as i64 - i64::from(exponent * 3 / 10) - 1,
                0,
                1i64 << exponent,
            ),
            Format::BinarySi => (-1, 0, 1),
        };
        if precision >= 0 {
            scale -= denom.len() as i32;
            if scale >= -9 {
                let shifted = format!("{num}{denom}");
                let value: i64 = shifted.parse().ok()?;
                if let Some(result) = value.checked_mul(multiplier) {
                    let canonical = match format {
                        Format::BinarySi => exponent % 10 == 0 && value & 7 != 0,
                        _ => {
                            scale % 3 == 0 && !shifted.ends_with("000") && !shifted.starts_with('0')
                        }
                    };
                    return Some(Self {
                        mantissa: i128::from(result) * sign,
                        exp: scale,
                        format,
                        verbatim: canonical.then(|| s.to_owned()),
                    });
                }
            }
        }
        // Everything else: the decimal value, rounded up to nano units.
        let number = &s[..number_end];
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return None;
        }
        let fraction = number.split_once('.').map_or(0, |(_, f)| f.len()) as i32;
        let mut m: i128 = digits.parse().ok()?;
        let mut e = -fraction;
        if base == 10 {
            e += exponent;
        } else {
            m = m.checked_mul(1i128.checked_shl(exponent as u32)?)?;
        }
        let mut format = format;
        if m != 0 && e < -9 {
            m = shift_down(m, (-9 - e) as u32).0;
            e = -9;
        }
        if format == Format::BinarySi {
            let max = i128::from(i64::MAX);
            let over = match e {
                e if e >= 0 => pow10(e as u32)
                    .and_then(|p| m.checked_mul(p))
                    .is_none_or(|v| v > max),
                e => m > max.saturating_mul(pow10((-e) as u32).unwrap_or(i128::MAX)),
            };
            if over {
                (m, e) = (max, 0);
            }
            let below_one = e < 0 && pow10((-e) as u32).is_some_and(|p| m < p);
            if m > 0 && below_one {
                format = Format::DecimalSi;
            }
        }
        Some(Self {
            mantissa: m * sign,
            exp: e,
            format,
            verbatim: None,
        })
    }

    /// Rounds up (away from zero) to milli units, as ResourceList defaulting does.
    fn round_up_to_milli(&mut self) {
        if self.exp >= -3 {
            return;
        }
        self.verbatim = None;
        self.mantissa = shift_down(self.mantissa, (-3 - self.exp) as u32).0;
        self.exp = -3;
    }

    /// Whether the magnitude is below 1024.
    fn below_1024(&self) -> bool {
        let m = self.mantissa.abs();
        if self.exp >= 0 {
            pow10(self.exp as u32)
                .and_then(|p| m.checked_mul(p))
                .is_some_and(|v| v < 1024)
        } else {
            pow10((-self.exp) as u32).is_none_or(|p| m < 1024 * p)
        }
    }

    fn render(&self) -> String {
        if let Some(s) = &self.verbatim {
            return s.clone();
        }
        if self.mantissa == 0 {
            return "0".into();
        }
        let mut format = self.format;
        let mut whole = None;
        if format == Format::BinarySi {
            if self.below_1024() {
                format = Format::DecimalSi;
            } else {
                let (v, exact) = if self.exp >= 0 {
                    match pow10(self.exp as u32).and_then(|p| self.mantissa.checked_mul(p)) {
                        Some(v) => (v, true),
                        None => (0, false),
                    }
                } else {
                    shift_down(self.mantissa, (-self.exp) as u32)
                };
                if exact {
                    whole = Some(v);
                } else {
                    format = Format::DecimalSi;
                }
            }
        }
        match (format, whole) {
            (Format::BinarySi, Some(mut v)) => {
                let mut power = 0;
                while v.abs() >= 1024 && v % 1024 == 0 {
                    v /= 1024;
                    power += 1;
                }
                let unit = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
                format!("{v}{}", unit.get(power).copied().unwrap_or_default())
            }
            _ => {
                let (mut m, mut e) = (self.mantissa, self.exp);
                while m.abs() >= 10 && m % 10 == 0 {
                    m /= 10;
                    e += 1;
                }
                match e.rem_euclid(3) {
                    1 => (m, e) = (m.saturating_mul(10), e - 1),
                    2 => (m, e) = (m.saturating_mul(100), e - 2),
                    _ => {}
                }
                let suffix = match format {
                    Format::DecimalExponent if e == 0 => String::new(),
                    Format::DecimalExponent => format!("e{e}"),
                    _ => match e {
                        -9 => "n",
                        -6 => "u",
                        -3 => "m",
                        3 => "k",
                        6 => "M",
                        9 => "G",
                        12 => "T",
                        15 => "P",
                        18 => "E",
                        _ => "",
                    }
                    .to_owned(),
                };
                format!("{m}{suffix}")
            }
        }
    }
}

/// A float as Go's `encoding/json` prints a float64: shortest digits, exponent form below
/// 1e-6 and from 1e21 (`1e-07` written `1e-7`, `1e+21`).
fn go_float(f: f64) -> String {
    let a = f.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        let s = format!("{f:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { "-" } else { "+" };
        // Go writes at least two exponent digits and then drops the `0` of `e-0N`.
        format!("{m}e{sign}{:02}", e.abs()).replace("e-0", "e-")
    } else {
        let s = format!("{f}");
        s.strip_suffix(".0").map_or(s.clone(), str::to_owned)
    }
}

/// The text of a quantity as sent: a string, or a JSON number as the API server prints it.
fn text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.trim().to_owned()),
        serde_json::Value::Number(n) if n.is_f64() => n.as_f64().map(go_float),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The canonical form of a quantity value (string or number), or `None` if it is not a
/// quantity. `in_resource_list`: the value is an entry of a ResourceList (rounded up to milli
/// units first).
pub fn canonical(v: &serde_json::Value, in_resource_list: bool) -> Option<String> {
    let mut q = Quantity::parse(&text(v)?)?;
    if in_resource_list {
        q.round_up_to_milli();
    }
    Some(q.render())
}

/// [`canonical`] of a string.
pub fn canonical_str(s: &str, in_resource_list: bool) -> Option<String> {
    canonical(&serde_json::Value::String(s.to_owned()), in_resource_list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Inputs and what kube-apiserver v1.36.3 stored for them in a container's
    /// `resources.requests.cpu` (a ResourceList entry).
    const OBSERVED: [(&str, &str); 64] = [
        ("100m", "100m"),
        ("0.1", "100m"),
        ("1.5Gi", "1536Mi"),
        ("2048Ki", "2Mi"),
        ("1000000", "1M"),
        ("1M", "1M"),
        ("12e6", "12e6"),
        ("0.0001", "1m"),
        ("1Ei", "1Ei"),
        ("1000m", "1"),
        ("1024Mi", "1Gi"),
        ("0.5", "500m"),
        ("1e3", "1e3"),
        ("1", "1"),
        ("0", "0"),
        ("500m", "500m"),
        ("1.5", "1500m"),
        ("1536Mi", "1536Mi"),
        ("1Gi", "1Gi"),
        ("1k", "1k"),
        ("1000", "1k"),
        ("1024", "1024"),
        ("1025Ki", "1025Ki"),
        ("0.001", "1m"),
        ("1m", "1m"),
        ("100Mi", "100Mi"),
        ("1.0", "1"),
        ("01", "01"),
        ("+1", "+1"),
        ("1e-3", "1e-3"),
        ("1E3", "1E3"),
        ("123456789", "123456789"),
        ("0.000001", "1m"),
        ("1.1Ki", "1126400m"),
        ("1023Ki", "1023Ki"),
        ("1024Ki", "1Mi"),
        ("0.5Gi", "512Mi"),
        ("1.5k", "1500"),
        ("2.5Mi", "2560Ki"),
        ("1e-9", "1e-3"),
        ("0.0000000001", "1m"),
        ("1200m", "1200m"),
        ("3Ki", "3Ki"),
        ("16Ki", "16Ki"),
        ("8Ki", "8Ki"),
        ("1e0", "1e0"),
        ("10e2", "1e3"),
        ("1.000", "1"),
        ("0.1m", "1m"),
        ("100u", "1m"),
        ("1n", "1m"),
        ("1e18", "1e18"),
        ("9223372036854775807", "9223372036854775807"),
        ("1Ti", "1Ti"),
        ("1024Ti", "1Pi"),
        ("1P", "1P"),
        ("0.5e3", "500"),
        (".5", "500m"),
        ("5.", "5."),
        ("1G", "1G"),
        ("1000G", "1T"),
        ("1000k", "1M"),
        ("4096", "4096"),
        ("1048576", "1048576"),
    ];

    #[test]
    fn resource_list_entries_read_back_as_the_api_server_stores_them() {
        for (input, want) in OBSERVED {
            assert_eq!(canonical_str(input, true).as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn json_numbers_are_printed_as_go_prints_a_float_first() {
        for (input, want) in [
            (json!(1000), "1k"),
            (json!(0.5), "500m"),
            (json!(1e3), "1k"),
            (json!(12e6), "12M"),
            (json!(2.0), "2"),
            (json!(1.5), "1500m"),
            (json!(1024), "1024"),
        ] {
            assert_eq!(canonical(&input, true).as_deref(), Some(want), "{input}");
        }
        assert_eq!(go_float(1e-7), "1e-7");
        assert_eq!(go_float(1e21), "1e+21");
    }

    #[test]
    fn outside_resource_lists_nothing_is_rounded_to_milli_units() {
        assert_eq!(canonical_str("100u", false).as_deref(), Some("100u"));
        assert_eq!(canonical_str("0.0001", false).as_deref(), Some("100u"));
        assert_eq!(canonical_str("1e-10", false).as_deref(), Some("1e-9"));
        assert_eq!(canonical_str("1.5Gi", false).as_deref(), Some("1536Mi"));
    }

    #[test]
    fn malformed_quantities_are_not_quantities() {
        for bad in ["", "abc", "1.2.3", "1Mi2", "1e", "1 Gi", "--1"] {
            assert_eq!(canonical_str(bad, false), None, "{bad}");
        }
        assert_eq!(canonical(&json!(true), false), None);
    }
}
