//! JSON parameters to PostgreSQL values, by the type PostgreSQL declared for each `$n`.

use super::*;

/// The type a domain is defined over (the type itself for anything else): values of a domain
/// travel in its base type's format.
fn base_type(mut ty: &Type) -> &Type {
    while let Kind::Domain(base) = ty.kind() {
        ty = base;
    }
    ty
}

// Parameters: JSON to PostgreSQL.

/// Converts every JSON parameter to the type PostgreSQL declared for it.
pub(super) fn bind_parameters<'a>(
    types: &[Type],
    values: &'a [Value],
) -> Result<Vec<Parameter<'a>>> {
    if types.len() != values.len() {
        return Err(Error::InvalidValue {
            reason: format!(
                "the statement takes {} parameter(s) but {} were given",
                types.len(),
                values.len()
            ),
        });
    }
    types
        .iter()
        .zip(values)
        .enumerate()
        .map(|(index, (ty, value))| {
            Parameter::convert(value, ty).map_err(|expected| Error::InvalidValue {
                reason: format!(
                    "parameter ${} of type {ty} expects {expected}, got {}",
                    index + 1,
                    preview(value)
                ),
            })
        })
        .collect()
}

/// A JSON value short enough to quote in an error message.
fn preview(value: &Value) -> String {
    let text = value.to_string();
    match shortened(&text, 60) {
        Some(prefix) => format!("{prefix}…"),
        None => text,
    }
}

/// The longest prefix of `text` within `limit` bytes, when `text` is longer than that.
pub(super) fn shortened(text: &str, limit: usize) -> Option<&str> {
    if text.len() <= limit {
        return None;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(&text[..end])
}

/// One parameter, converted for its declared type.
#[derive(Debug)]
pub(super) enum Parameter<'a> {
    Null,
    Bool(bool),
    Int2(i16),
    Int4(i32),
    Int8(i64),
    Oid(u32),
    Float4(f32),
    Float8(f64),
    Numeric(Decimal),
    /// UTF-8 bytes in binary format, which is how text-like types and enum labels travel.
    Text(Cow<'a, str>),
    /// A value PostgreSQL parses itself from its text form.
    TextFormat(Cow<'a, str>),
    Json(Cow<'a, Value>),
    Uuid(Uuid),
    Timestamptz(DateTime<Utc>),
    Timestamp(NaiveDateTime),
    Date(NaiveDate),
    Time(NaiveTime),
    Bytea(Vec<u8>),
    /// A one-dimensional array; every element is in binary format.
    Array(Vec<Parameter<'a>>),
}

type Expected = Cow<'static, str>;

const EXPECT_BOOL: &str = "a boolean";
const EXPECT_INTEGER: &str = "an integer in range, as a number or a string";
const EXPECT_FLOAT: &str = "a number or a numeric string";
const EXPECT_NUMERIC: &str = "a number or a numeric string";
const EXPECT_UUID: &str = "a UUID string";
const EXPECT_TEXT_FORM: &str = "a string in PostgreSQL's text form for the type";
const EXPECT_BASE64: &str = "a base64 string";

impl<'a> Parameter<'a> {
    fn convert(value: &'a Value, ty: &Type) -> std::result::Result<Self, Expected> {
        if value.is_null() {
            return Ok(Parameter::Null);
        }
        let ty = base_type(ty);
        let parameter = match *ty {
            Type::BOOL => match value {
                Value::Bool(flag) => Parameter::Bool(*flag),
                Value::String(text) if text == "true" => Parameter::Bool(true),
                Value::String(text) if text == "false" => Parameter::Bool(false),
                _ => return Err(EXPECT_BOOL.into()),
            },
            Type::INT2 => Parameter::Int2(integer(value).ok_or(EXPECT_INTEGER)?),
            Type::INT4 => Parameter::Int4(integer(value).ok_or(EXPECT_INTEGER)?),
            Type::INT8 => Parameter::Int8(integer(value).ok_or(EXPECT_INTEGER)?),
            Type::OID => Parameter::Oid(integer(value).ok_or(EXPECT_INTEGER)?),
            Type::FLOAT4 => {
                let wide = float(value).ok_or(EXPECT_FLOAT)?;
                let narrow = wide as f32;
                if wide.is_finite() && !narrow.is_finite() {
                    return Err("a number within float4 range".into());
                }
                Parameter::Float4(narrow)
            }
            Type::FLOAT8 => Parameter::Float8(float(value).ok_or(EXPECT_FLOAT)?),
            Type::NUMERIC => numeric(value)?,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Parameter::Text(text(value))
            }
            // A string that is JSON text is that JSON, as node-postgres (which sent strings as
            // text) stored it; any other string is stored as a JSON string.
            Type::JSON | Type::JSONB => Parameter::Json(match value {
                Value::String(text) => {
                    serde_json::from_str(text).map_or(Cow::Borrowed(value), Cow::Owned)
                }
                other => Cow::Borrowed(other),
            }),
            Type::UUID => Parameter::Uuid(
                value
                    .as_str()
                    .and_then(|text| Uuid::parse_str(text.trim()).ok())
                    .ok_or(EXPECT_UUID)?,
            ),
            Type::TIMESTAMPTZ => {
                let text = value.as_str().ok_or("an RFC 3339 timestamp string")?;
                match DateTime::parse_from_rfc3339(text.trim()) {
                    Ok(moment) => Parameter::Timestamptz(moment.with_timezone(&Utc)),
                    Err(_) => Parameter::TextFormat(Cow::Borrowed(text)),
                }
            }
            Type::TIMESTAMP => {
                let text = value.as_str().ok_or("an ISO 8601 timestamp string")?;
                let trimmed = text.trim();
                match NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%d %H:%M:%S%.f"))
                {
                    Ok(moment) => Parameter::Timestamp(moment),
                    Err(_) => Parameter::TextFormat(Cow::Borrowed(text)),
                }
            }
            Type::DATE => {
                let text = value.as_str().ok_or("a YYYY-MM-DD date string")?;
                match NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
                    Ok(date) => Parameter::Date(date),
                    Err(_) => Parameter::TextFormat(Cow::Borrowed(text)),
                }
            }
            Type::TIME => {
                let text = value.as_str().ok_or("an HH:MM:SS time string")?;
                match NaiveTime::parse_from_str(text.trim(), "%H:%M:%S%.f") {
                    Ok(time) => Parameter::Time(time),
                    Err(_) => Parameter::TextFormat(Cow::Borrowed(text)),
                }
            }
            Type::BYTEA => Parameter::Bytea(
                value
                    .as_str()
                    .and_then(|text| BASE64.decode(text).ok())
                    .ok_or(EXPECT_BASE64)?,
            ),
            _ => match ty.kind() {
                Kind::Array(element_type) => match value {
                    Value::Array(items) => Parameter::Array(array_elements(items, element_type)?),
                    Value::String(literal) => Parameter::TextFormat(Cow::Borrowed(literal)),
                    _ => return Err("a JSON array or an array literal string".into()),
                },
                Kind::Enum(_) => match value {
                    Value::String(label) => Parameter::Text(Cow::Borrowed(label)),
                    _ => return Err("a string naming one of the enum's labels".into()),
                },
                _ => Parameter::TextFormat(scalar_text(value).ok_or(EXPECT_TEXT_FORM)?),
            },
        };
        Ok(parameter)
    }
}

fn array_elements<'a>(
    items: &'a [Value],
    element_type: &Type,
) -> std::result::Result<Vec<Parameter<'a>>, Expected> {
    items
        .iter()
        .map(|item| match Parameter::convert(item, element_type) {
            Ok(Parameter::TextFormat(_)) | Ok(Parameter::Array(_)) => Err(Cow::Owned(format!(
                "an array literal string (elements of type {element_type} cannot be given \
                 as a JSON array)"
            ))),
            Ok(element) => Ok(element),
            Err(expected) => Err(Cow::Owned(format!(
                "a JSON array whose elements are each {expected}"
            ))),
        })
        .collect()
}

/// An integral JSON number, or a string holding one, that fits `T`.
fn integer<T: TryFrom<i64>>(value: &Value) -> Option<T> {
    let wide = match value {
        Value::Number(number) => match number.as_i64() {
            Some(integral) => integral,
            None => {
                let float = number.as_f64()?;
                // JavaScript has no integer type: 3.0 is the number 3.
                if float.fract() != 0.0 || float.abs() >= 9.223_372_036_854_775e18 {
                    return None;
                }
                float as i64
            }
        },
        Value::String(text) => text.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    T::try_from(wide).ok()
}

fn float(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    }
}

/// A `numeric` parameter: exact through `rust_decimal` when it fits its 28 digits, otherwise
/// (more digits, an exponent, `NaN`, `Infinity`) as text that PostgreSQL parses exactly.
fn numeric(value: &Value) -> std::result::Result<Parameter<'_>, Expected> {
    let text: Cow<'_, str> = match value {
        Value::Number(number) => {
            if let Some(integral) = number.as_i64() {
                return Ok(Parameter::Numeric(Decimal::from(integral)));
            }
            if let Some(integral) = number.as_u64() {
                return Ok(Parameter::Numeric(Decimal::from(integral)));
            }
            Cow::Owned(number.to_string())
        }
        Value::String(text) => Cow::Borrowed(text.trim()),
        _ => return Err(EXPECT_NUMERIC.into()),
    };
    if let Ok(decimal) = Decimal::from_str_exact(&text) {
        return Ok(Parameter::Numeric(decimal));
    }
    if is_numeric_literal(&text) {
        return Ok(Parameter::TextFormat(text));
    }
    Err(EXPECT_NUMERIC.into())
}

/// Whether `text` is a literal PostgreSQL's `numeric` input accepts: an optional sign, digits
/// with an optional decimal point, an optional exponent; or `NaN`, `Infinity`, `inf`.
pub(super) fn is_numeric_literal(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    if ["nan", "infinity", "inf"]
        .iter()
        .any(|special| unsigned.eq_ignore_ascii_case(special))
    {
        return true;
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    let mantissa_ok =
        digits(whole) && digits(fraction) && !(whole.is_empty() && fraction.is_empty());
    let exponent_ok = exponent.is_none_or(|exponent| {
        let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        !exponent.is_empty() && digits(exponent)
    });
    mantissa_ok && exponent_ok
}

/// Text for a text-like column: strings as they are, numbers and booleans as written in JSON,
/// objects and arrays as JSON text.
fn text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(text) => Cow::Borrowed(text),
        Value::Bool(true) => Cow::Borrowed("true"),
        Value::Bool(false) => Cow::Borrowed("false"),
        other => Cow::Owned(other.to_string()),
    }
}

/// The text form of a scalar, for types PostgreSQL parses itself.
fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(text) => Some(Cow::Borrowed(text)),
        Value::Number(number) => Some(Cow::Owned(number.to_string())),
        Value::Bool(true) => Some(Cow::Borrowed("true")),
        Value::Bool(false) => Some(Cow::Borrowed("false")),
        _ => None,
    }
}

impl ToSql for Parameter<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        let ty = base_type(ty);
        match self {
            Parameter::Null => Ok(IsNull::Yes),
            Parameter::Bool(flag) => flag.to_sql(ty, out),
            Parameter::Int2(number) => number.to_sql(ty, out),
            Parameter::Int4(number) => number.to_sql(ty, out),
            Parameter::Int8(number) => number.to_sql(ty, out),
            Parameter::Oid(number) => number.to_sql(ty, out),
            Parameter::Float4(number) => number.to_sql(ty, out),
            Parameter::Float8(number) => number.to_sql(ty, out),
            Parameter::Numeric(decimal) => decimal.to_sql(ty, out),
            Parameter::Text(text) | Parameter::TextFormat(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
            Parameter::Json(value) => value.as_ref().to_sql(ty, out),
            Parameter::Uuid(uuid) => uuid.to_sql(ty, out),
            Parameter::Timestamptz(moment) => moment.to_sql(ty, out),
            Parameter::Timestamp(moment) => moment.to_sql(ty, out),
            Parameter::Date(date) => date.to_sql(ty, out),
            Parameter::Time(time) => time.to_sql(ty, out),
            Parameter::Bytea(bytes) => bytes.as_slice().to_sql(ty, out),
            Parameter::Array(elements) => write_array(ty, elements, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // `Parameter::convert` already chose the representation from the declared type.
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        match self {
            Parameter::TextFormat(_) => Format::Text,
            _ => Format::Binary,
        }
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Writes a one-dimensional array in PostgreSQL's binary array format.
fn write_array(
    ty: &Type,
    elements: &[Parameter<'_>],
    out: &mut BytesMut,
) -> std::result::Result<IsNull, BoxError> {
    let Kind::Array(element_type) = ty.kind() else {
        return Err(format!("type {ty} is not an array type").into());
    };
    let dimensions: i32 = if elements.is_empty() { 0 } else { 1 };
    let has_null = elements
        .iter()
        .any(|element| matches!(element, Parameter::Null));
    out.extend_from_slice(&dimensions.to_be_bytes());
    out.extend_from_slice(&i32::from(has_null).to_be_bytes());
    out.extend_from_slice(&element_type.oid().to_be_bytes());
    if elements.is_empty() {
        return Ok(IsNull::No);
    }
    out.extend_from_slice(&i32::try_from(elements.len())?.to_be_bytes());
    out.extend_from_slice(&1_i32.to_be_bytes());
    for element in elements {
        let length_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let length = match element.to_sql(element_type, out)? {
            IsNull::Yes => -1,
            IsNull::No => i32::try_from(out.len() - length_at - 4)?,
        };
        out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
    }
    Ok(IsNull::No)
}

// Rows: PostgreSQL to JSON.
