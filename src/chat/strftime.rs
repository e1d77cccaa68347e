//! `strftime_now(format)`, the clock transformers gives chat templates (`datetime.now().
//! strftime(format)`), for the current time in UTC: no time-zone database here, and a
//! server's clock is usually UTC anyway.

use web_time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// A UTC time broken into calendar fields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DateTime {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Sunday
    pub weekday: u32,
    /// 1..=366
    pub yearday: u32,
}

impl DateTime {
    /// The calendar fields of `secs` seconds after the Unix epoch (proleptic Gregorian).
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][month as usize - 1];
        DateTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            weekday: (days + 4).rem_euclid(7) as u32,
            yearday: before + day + u32::from(leap && month > 2),
        }
    }

    /// The time now, in UTC.
    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Self::from_unix(secs)
    }

    /// C's `strftime` of the common conversions (`%Y %y %m %d %e %j %H %I %M %S %p %A %a %B
    /// %b %F %T %Z %z %%`, and glibc's `%-d`-style unpadded forms); others stay as written.
    pub fn strftime(&self, format: &str) -> String {
        let mut out = String::new();
        let mut chars = format.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let unpadded = chars.peek() == Some(&'-');
            if unpadded {
                chars.next();
            }
            match chars.next() {
                Some(code) => match self.field(code, unpadded) {
                    Some(text) => out.push_str(&text),
                    None => {
                        out.push('%');
                        if unpadded {
                            out.push('-');
                        }
                        out.push(code);
                    }
                },
                None => out.push('%'),
            }
        }
        out
    }

    fn field(&self, code: char, unpadded: bool) -> Option<String> {
        let num = |v: u32, width: usize| {
            if unpadded {
                v.to_string()
            } else {
                format!("{v:0width$}")
            }
        };
        let hour12 = (self.hour + 11) % 12 + 1;
        Some(match code {
            'Y' => self.year.to_string(),
            'y' => num(self.year.rem_euclid(100) as u32, 2),
            'm' => num(self.month, 2),
            'd' => num(self.day, 2),
            'e' => format!("{:>2}", self.day),
            'j' => num(self.yearday, 3),
            'H' => num(self.hour, 2),
            'I' => num(hour12, 2),
            'M' => num(self.minute, 2),
            'S' => num(self.second, 2),
            'p' => (if self.hour < 12 { "AM" } else { "PM" }).to_string(),
            'A' => WEEKDAYS[self.weekday as usize].to_string(),
            'a' => WEEKDAYS[self.weekday as usize][..3].to_string(),
            'B' => MONTHS[self.month as usize - 1].to_string(),
            'b' | 'h' => MONTHS[self.month as usize - 1][..3].to_string(),
            'F' => format!("{}-{:02}-{:02}", self.year, self.month, self.day),
            'T' => format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second),
            'Z' => "UTC".to_string(),
            'z' => "+0000".to_string(),
            '%' => "%".to_string(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_c_strftime() {
        // 2024-02-29 13:05:09 UTC, a Thursday, day 60 of a leap year.
        let t = DateTime::from_unix(1_709_211_909);
        assert_eq!(
            t.strftime("%Y-%m-%d %H:%M:%S %A %a %B %b %j %I%p %-d/%-m %y %% %Q"),
            "2024-02-29 13:05:09 Thursday Thu February Feb 060 01PM 29/2 24 % %Q"
        );
        assert_eq!(
            DateTime::from_unix(0).strftime("%d %B %Y, %A"),
            "01 January 1970, Thursday"
        );
        assert_eq!(
            DateTime::from_unix(-1).strftime("%F %T"),
            "1969-12-31 23:59:59"
        );
    }
}
