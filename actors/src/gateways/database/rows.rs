//! PostgreSQL rows to JSON objects, decoding each column's binary form.

use super::*;

/// The bytes a row took on the wire: the sum of its cells' binary forms (`NULL` counts nothing).
pub(super) fn raw_size(row: &Row) -> usize {
    (0..row.len())
        .filter_map(|index| row.try_get::<_, RawLength>(index).ok())
        .map(|length| length.0)
        .sum()
}

/// The length of a cell of any type, without decoding it.
struct RawLength(usize);

impl<'a> FromSql<'a> for RawLength {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(RawLength(raw.len()))
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(RawLength(0))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// One row as a JSON object keyed by column name. When two columns share a name, the later
/// one wins, as in node-postgres.
pub(super) fn row_to_json(row: &Row) -> Result<Value> {
    let columns = row.columns();
    let mut object = Map::new();
    for (index, column) in columns.iter().enumerate() {
        let JsonCell(value) = row
            .try_get(index)
            .map_err(|error| column_error(column, &error))?;
        object.insert(column.name().to_owned(), value);
    }
    Ok(Value::Object(object))
}

fn column_error(column: &Column, error: &tokio_postgres::Error) -> Error {
    let cause = error
        .source()
        .map_or_else(|| error.to_string(), ToString::to_string);
    Error::InvalidValue {
        reason: format!(
            "column '{}' of type {}: {cause}",
            column.name(),
            column.type_()
        ),
    }
}

/// One result value as JSON (see the module's table). `numeric` becomes a string, because a
/// JSON number is a double in JavaScript and would silently lose digits.
struct JsonCell(Value);

impl<'a> FromSql<'a> for JsonCell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        decode(ty, raw).map(JsonCell)
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(JsonCell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        // Every type is accepted here; one with no JSON form fails in `decode` with a message
        // naming it.
        true
    }
}

fn decode(ty: &Type, raw: &[u8]) -> std::result::Result<Value, BoxError> {
    let value = match *ty {
        Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
        Type::INT2 => Value::from(i16::from_sql(ty, raw)?),
        Type::INT4 => Value::from(i32::from_sql(ty, raw)?),
        Type::INT8 => Value::from(i64::from_sql(ty, raw)?),
        Type::OID => Value::from(u32::from_sql(ty, raw)?),
        Type::FLOAT4 => {
            let number = f32::from_sql(ty, raw)?;
            // Through the shortest text of the `f32`, so that 0.1 stays 0.1 rather than
            // becoming 0.10000000149011612.
            match number.to_string().parse::<f64>() {
                Ok(wide) if number.is_finite() => float_json(wide),
                _ => float_json(f64::from(number)),
            }
        }
        Type::FLOAT8 => float_json(f64::from_sql(ty, raw)?),
        Type::NUMERIC => Value::String(numeric_text(raw)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::XML => {
            Value::String(std::str::from_utf8(raw)?.to_owned())
        }
        Type::CHAR => Value::String(char_text(i8::from_sql(ty, raw)?)),
        Type::JSON | Type::JSONB => Value::from_sql(ty, raw)?,
        Type::UUID => Value::String(Uuid::from_slice(raw)?.hyphenated().to_string()),
        Type::TIMESTAMPTZ => Value::String(timestamp_text(raw, true)?),
        Type::TIMESTAMP => Value::String(timestamp_text(raw, false)?),
        Type::DATE => Value::String(date_text(raw)?),
        Type::TIME => Value::String(time_text(be_i64(raw, 0)?)),
        Type::TIMETZ => Value::String(timetz_text(raw)?),
        Type::INTERVAL => Value::String(interval_text(raw)?),
        Type::BYTEA => Value::String(BASE64.encode(raw)),
        Type::INET | Type::CIDR => Value::String(inet_text(raw, *ty == Type::CIDR)?),
        _ => match ty.kind() {
            Kind::Array(element_type) => decode_array(element_type, raw)?,
            Kind::Domain(base) => decode(base, raw)?,
            Kind::Enum(_) => Value::String(std::str::from_utf8(raw)?.to_owned()),
            Kind::Simple if ty.name() == "citext" => {
                Value::String(std::str::from_utf8(raw)?.to_owned())
            }
            _ => {
                return Err(format!(
                    "type {ty} has no JSON form; cast the column in SQL, e.g. to text"
                )
                .into())
            }
        },
    };
    Ok(value)
}

/// A finite float as a JSON number; `NaN` and the infinities as PostgreSQL writes them.
fn float_json(number: f64) -> Value {
    match Number::from_f64(number) {
        Some(number) => Value::Number(number),
        None if number.is_nan() => Value::String("NaN".to_owned()),
        None if number > 0.0 => Value::String("Infinity".to_owned()),
        None => Value::String("-Infinity".to_owned()),
    }
}

fn be_bytes<const N: usize>(raw: &[u8], at: usize) -> std::result::Result<[u8; N], BoxError> {
    raw.get(at..at + N)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| "value is shorter than its type's binary format".into())
}

fn be_i16(raw: &[u8], at: usize) -> std::result::Result<i16, BoxError> {
    Ok(i16::from_be_bytes(be_bytes(raw, at)?))
}

fn be_u16(raw: &[u8], at: usize) -> std::result::Result<u16, BoxError> {
    Ok(u16::from_be_bytes(be_bytes(raw, at)?))
}

fn be_i32(raw: &[u8], at: usize) -> std::result::Result<i32, BoxError> {
    Ok(i32::from_be_bytes(be_bytes(raw, at)?))
}

fn be_i64(raw: &[u8], at: usize) -> std::result::Result<i64, BoxError> {
    Ok(i64::from_be_bytes(be_bytes(raw, at)?))
}

/// A `numeric` in its binary format (base-10000 digits, a weight, a sign and a display scale)
/// written out exactly as PostgreSQL's `numeric_out` does.
fn numeric_text(raw: &[u8]) -> std::result::Result<String, BoxError> {
    const POSITIVE: u16 = 0x0000;
    const NEGATIVE: u16 = 0x4000;
    const NAN: u16 = 0xC000;
    const POSITIVE_INFINITY: u16 = 0xD000;
    const NEGATIVE_INFINITY: u16 = 0xF000;

    let digit_count = usize::from(be_u16(raw, 0)?);
    let weight = i32::from(be_i16(raw, 2)?);
    let sign = be_u16(raw, 4)?;
    let display_scale = usize::from(be_u16(raw, 6)?);
    if raw.len() != 8 + 2 * digit_count {
        return Err("numeric value has a malformed binary format".into());
    }
    match sign {
        NAN => return Ok("NaN".to_owned()),
        POSITIVE_INFINITY => return Ok("Infinity".to_owned()),
        NEGATIVE_INFINITY => return Ok("-Infinity".to_owned()),
        POSITIVE | NEGATIVE => {}
        _ => return Err("numeric value has an unknown sign".into()),
    }
    // Digit `index` counts 10000^(weight - index); outside the stored digits it is zero.
    let digit = |index: i32| -> u16 {
        usize::try_from(index)
            .ok()
            .filter(|&index| index < digit_count)
            .map_or(0, |index| {
                u16::from_be_bytes([raw[8 + 2 * index], raw[9 + 2 * index]])
            })
    };
    let mut text = String::with_capacity(2 + 4 * (digit_count + 1) + display_scale);
    if sign == NEGATIVE {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for index in 0..=weight {
            if index == 0 {
                let _ = write!(text, "{}", digit(index));
            } else {
                let _ = write!(text, "{:04}", digit(index));
            }
        }
    }
    if display_scale > 0 {
        text.push('.');
        let fraction_start = text.len();
        let mut index = weight + 1;
        while text.len() - fraction_start < display_scale {
            let _ = write!(text, "{:04}", digit(index));
            index += 1;
        }
        text.truncate(fraction_start + display_scale);
    }
    Ok(text)
}

fn char_text(byte: i8) -> String {
    let byte = byte as u8;
    match byte {
        0 => String::new(),
        1..=127 => char::from(byte).to_string(),
        _ => format!("\\{byte:03o}"),
    }
}

/// Midnight of 2000-01-01, PostgreSQL's epoch for dates and timestamps.
fn postgres_epoch() -> NaiveDateTime {
    NaiveDateTime::new(POSTGRES_EPOCH_DATE, NaiveTime::MIN)
}

/// 2000-01-01 (`from_ymd_opt` is `const`, so a wrong date would not compile).
const POSTGRES_EPOCH_DATE: NaiveDate = match NaiveDate::from_ymd_opt(2000, 1, 1) {
    Some(date) => date,
    None => NaiveDate::MIN,
};

/// A `timestamptz` (RFC 3339, UTC, `Z`) or `timestamp` (ISO 8601 without offset).
fn timestamp_text(raw: &[u8], with_time_zone: bool) -> std::result::Result<String, BoxError> {
    let microseconds = be_i64(raw, 0)?;
    match microseconds {
        i64::MAX => return Ok("infinity".to_owned()),
        i64::MIN => return Ok("-infinity".to_owned()),
        _ => {}
    }
    let moment = postgres_epoch()
        .checked_add_signed(TimeDelta::microseconds(microseconds))
        .ok_or("timestamp is outside the range Warden can represent")?;
    Ok(if with_time_zone {
        moment
            .and_utc()
            .to_rfc3339_opts(SecondsFormat::AutoSi, true)
    } else {
        moment.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
    })
}

fn date_text(raw: &[u8]) -> std::result::Result<String, BoxError> {
    let days = be_i32(raw, 0)?;
    match days {
        i32::MAX => return Ok("infinity".to_owned()),
        i32::MIN => return Ok("-infinity".to_owned()),
        _ => {}
    }
    let date = postgres_epoch()
        .date()
        .checked_add_signed(TimeDelta::days(i64::from(days)))
        .ok_or("date is outside the range Warden can represent")?;
    Ok(date.format("%Y-%m-%d").to_string())
}

/// `HH:MM:SS` and, when there is one, the fraction without trailing zeros, as PostgreSQL writes
/// a `time` (which can be `24:00:00`).
fn time_text(microseconds: i64) -> String {
    let microseconds = microseconds.unsigned_abs();
    let mut text = String::with_capacity(15);
    let _ = write!(
        text,
        "{:02}:{:02}:{:02}",
        microseconds / 3_600_000_000,
        microseconds / 60_000_000 % 60,
        microseconds / 1_000_000 % 60
    );
    push_fraction(&mut text, microseconds % 1_000_000);
    text
}

fn push_fraction(text: &mut String, microseconds: u64) {
    if microseconds == 0 {
        return;
    }
    let digits = format!("{microseconds:06}");
    text.push('.');
    text.push_str(digits.trim_end_matches('0'));
}

/// A `timetz`: the time, then the offset east of UTC as PostgreSQL writes it (`+02`, `-05:30`).
fn timetz_text(raw: &[u8]) -> std::result::Result<String, BoxError> {
    let mut text = time_text(be_i64(raw, 0)?);
    // Stored as seconds west of UTC.
    let east = -i64::from(be_i32(raw, 8)?);
    text.push(if east >= 0 { '+' } else { '-' });
    let east = east.unsigned_abs();
    let _ = write!(text, "{:02}", east / 3600);
    if east % 3600 != 0 {
        let _ = write!(text, ":{:02}", east / 60 % 60);
        if east % 60 != 0 {
            let _ = write!(text, ":{:02}", east % 60);
        }
    }
    Ok(text)
}

/// An `interval` in PostgreSQL's default output style (`1 year 2 mons -3 days +04:05:06.5`).
fn interval_text(raw: &[u8]) -> std::result::Result<String, BoxError> {
    let microseconds = be_i64(raw, 0)?;
    let days = be_i32(raw, 8)?;
    let months = be_i32(raw, 12)?;
    let mut text = String::new();
    let mut is_zero = true;
    let mut is_before = false;
    for (value, unit) in [
        (i64::from(months / 12), "year"),
        (i64::from(months % 12), "mon"),
        (i64::from(days), "day"),
    ] {
        if value == 0 {
            continue;
        }
        let _ = write!(
            text,
            "{}{}{value} {unit}{}",
            if is_zero { "" } else { " " },
            if is_before && value > 0 { "+" } else { "" },
            if value == 1 { "" } else { "s" }
        );
        is_before = value < 0;
        is_zero = false;
    }
    if is_zero || microseconds != 0 {
        let sign = if microseconds < 0 {
            "-"
        } else if is_before {
            "+"
        } else {
            ""
        };
        if !is_zero {
            text.push(' ');
        }
        text.push_str(sign);
        text.push_str(&time_text(microseconds));
    }
    Ok(text)
}

/// An `inet` (`/bits` only when not a single host) or a `cidr` (always `/bits`).
fn inet_text(raw: &[u8], is_cidr_type: bool) -> std::result::Result<String, BoxError> {
    const FAMILY_INET: u8 = 2;
    const FAMILY_INET6: u8 = 3;
    let [family, bits, _, length] = be_bytes::<4>(raw, 0)?;
    let address = raw
        .get(4..4 + usize::from(length))
        .ok_or("malformed inet")?;
    let (text, full_bits) = match (family, address.len()) {
        (FAMILY_INET, 4) => {
            let octets: [u8; 4] = address.try_into()?;
            (Ipv4Addr::from(octets).to_string(), 32)
        }
        (FAMILY_INET6, 16) => {
            let octets: [u8; 16] = address.try_into()?;
            (Ipv6Addr::from(octets).to_string(), 128)
        }
        _ => return Err("malformed inet".into()),
    };
    Ok(if is_cidr_type || bits != full_bits {
        format!("{text}/{bits}")
    } else {
        text
    })
}

/// An array of any decodable element type, nested once per dimension.
fn decode_array(element_type: &Type, raw: &[u8]) -> std::result::Result<Value, BoxError> {
    let dimension_count = usize::try_from(be_i32(raw, 0)?)?;
    if dimension_count == 0 {
        return Ok(Value::Array(Vec::new()));
    }
    let mut lengths = Vec::with_capacity(dimension_count);
    for dimension in 0..dimension_count {
        lengths.push(usize::try_from(be_i32(raw, 12 + 8 * dimension)?)?);
    }
    let mut at = 12 + 8 * dimension_count;
    let value = decode_dimension(element_type, raw, &lengths, &mut at)?;
    if at != raw.len() {
        return Err("array value has trailing bytes".into());
    }
    Ok(value)
}

fn decode_dimension(
    element_type: &Type,
    raw: &[u8],
    lengths: &[usize],
    at: &mut usize,
) -> std::result::Result<Value, BoxError> {
    let (&length, inner) = lengths.split_first().ok_or("array without dimensions")?;
    let mut items = Vec::with_capacity(length);
    for _ in 0..length {
        let item = if inner.is_empty() {
            let size = be_i32(raw, *at)?;
            *at += 4;
            if size < 0 {
                Value::Null
            } else {
                let size = usize::try_from(size)?;
                let bytes = raw
                    .get(*at..*at + size)
                    .ok_or("array element is cut short")?;
                *at += size;
                decode(element_type, bytes)?
            }
        } else {
            decode_dimension(element_type, raw, inner, at)?
        };
        items.push(item);
    }
    Ok(Value::Array(items))
}
