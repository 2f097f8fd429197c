//! Resource quantities ("100m", "1.5", "128Mi", "1G") parsed to exact integer milli-units.

/// A quantity could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}")]
pub struct QuantityError(pub String);

/// Parses a quantity into thousandths of the base unit (cores → millicores, bytes → millibytes).
pub fn parse_milli(s: &str) -> Result<i128, QuantityError> {
    let err = || QuantityError(s.to_string());
    let s = s.trim();
    let split =
        s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() {
        return Err(err());
    }
    let (mult_num, mult_den): (i128, i128) = match suffix {
        "" => (1000, 1),
        "m" => (1, 1),
        "k" => (1_000_000, 1),
        "M" => (1_000_000_000, 1),
        "G" => (1_000_000_000_000, 1),
        "T" => (1_000_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000_000, 1),
        "Ki" => (1000 << 10, 1),
        "Mi" => (1000 << 20, 1),
        "Gi" => (1000 << 30, 1),
        "Ti" => (1000 << 40, 1),
        "Pi" => (1000 << 50, 1),
        "Ei" => (1000 << 60, 1),
        "n" => (1, 1_000_000),
        "u" => (1, 1000),
        _ => {
            let exp: i32 = suffix.strip_prefix(['e', 'E']).and_then(|e| e.parse().ok()).ok_or_else(err)?;
            if !(-3..=18).contains(&exp) {
                return Err(err());
            }
            if exp >= -3 { (1000 * 10i128.pow((exp + 3) as u32) / 1000, 1) } else { (1, 1) }
        }
    };
    let negative = num.starts_with('-');
    let digits = num.trim_start_matches(['+', '-']);
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(err());
    }
    let int: i128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| err())? };
    let frac_den = 10i128.pow(frac_part.len() as u32);
    let frac: i128 = if frac_part.is_empty() { 0 } else { frac_part.parse().map_err(|_| err())? };
    let total = (int * frac_den + frac) * mult_num;
    let value = total / (frac_den * mult_den);
    // Kubernetes rounds up fractional milli-units.
    let value = if total % (frac_den * mult_den) != 0 { value + 1 } else { value };
    Ok(if negative { -value } else { value })
}

/// CPU in millicores.
pub fn cpu_millis(s: &str) -> Result<i64, QuantityError> {
    parse_milli(s).map(|m| m as i64)
}

/// Memory (or any byte quantity) in bytes, rounded up.
pub fn bytes(s: &str) -> Result<i64, QuantityError> {
    units(s)
}

/// Any quantity in whole base units, rounded up (pods, extended resources like `example.com/gpu`).
pub fn units(s: &str) -> Result<i64, QuantityError> {
    parse_milli(s).map(|m| ((m + 999) / 1000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu() {
        assert_eq!(cpu_millis("100m"), Ok(100));
        assert_eq!(cpu_millis("1.5"), Ok(1500));
        assert_eq!(cpu_millis("2"), Ok(2000));
        assert_eq!(cpu_millis("0.0001"), Ok(1));
        assert!(cpu_millis("abc").is_err());
    }

    #[test]
    fn memory() {
        assert_eq!(bytes("128Mi"), Ok(128 << 20));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert_eq!(bytes("1e3"), Ok(1000));
        assert_eq!(bytes("64Ki"), Ok(65_536));
        assert!(bytes("12XB").is_err());
        assert!(bytes("128Mi").unwrap() > bytes("100M").unwrap());
        assert_eq!(bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(bytes("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(bytes("1Ei"), Ok(1 << 60));
        assert!(bytes("").is_err());
        assert!(bytes("12x").is_err());
    }

    #[test]
    fn counts() {
        assert_eq!(units("110"), Ok(110));
        assert_eq!(units("2"), Ok(2));
        assert_eq!(units("1k"), Ok(1000));
    }
}
