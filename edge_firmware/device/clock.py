# The clock, set before any TLS handshake. ESP32 builds check certificate dates against
# the RTC (mbedTLS with CONFIG_MBEDTLS_HAVE_TIME_DATE), and the RTC reads 2000-01-01 after
# power-on, so a 2026 certificate is "not yet valid" until the clock is set. The RTC keeps
# running through deep sleep and soft resets: NTP is asked only when the year is before
# the firmware's own (power-on). Plain MQTT needs no clock and asks nothing.
import time

import watchdog
from rt import const, sleep_ms

MIN_YEAR = const(2026)  # no correct clock can read earlier than this firmware
DEFAULT_HOST = "pool.ntp.org"


class ClockError(Exception):
    pass


def year():
    return time.gmtime()[0]


def ensure(conf, attempts=3):
    # True when the clock was set now; False when it needed nothing. ClockError when TLS
    # is configured, the clock is wrong and no NTP answer came.
    if not conf["mqtt"].get("ca") or year() >= MIN_YEAR:
        return False
    import ntptime

    host = (conf.get("edge") or {}).get("ntp_host") or DEFAULT_HOST
    ntptime.host = host
    for n in range(attempts):
        watchdog.feed()
        try:
            ntptime.settime()  # one UDP exchange, ntptime's own 1 s socket timeout
        except (OSError, OverflowError, IndexError) as exc:
            print("clock: NTP %s did not answer (%r), attempt %d of %d"
                  % (host, exc, n + 1, attempts))
        else:
            if year() >= MIN_YEAR:
                print("clock: set from %s to %d-%02d-%02d" % ((host,) + time.gmtime()[:3]))
                return True
        sleep_ms(1000)
    raise ClockError("the clock reads %d and NTP %s did not answer: TLS cannot check the "
                     "broker's certificate; set edge.ntp_host to a reachable NTP server"
                     % (year(), host))
