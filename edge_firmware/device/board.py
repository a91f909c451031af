# The board: status LED and blink codes, battery level, CPU clock, deep sleep, reset.
#
# Blink codes (n short flashes, then a pause, repeated):
#   2  config.json missing             5  Wi-Fi did not connect
#   3  config.json is not JSON         6  the broker refused us (credentials, ACL)
#   4  a config field is missing/bad   7  the sensor does not answer
#                                      8  unexpected error (backing off before a reset)
import machine

from rt import const, sleep_ms

CODE_WIFI = const(5)
CODE_BROKER = const(6)
CODE_SENSOR = const(7)
CODE_CRASH = const(8)


class Board:
    def __init__(self, edge=None):
        edge = edge or {}
        self.pin = None
        self.active_low = bool(edge.get("led_active_low", False))
        led = edge.get("led", 2)
        if led is not None and led >= 0:
            try:
                self.pin = machine.Pin(led, machine.Pin.OUT)
            except (ValueError, OSError):
                self.pin = None
        self.batt = edge.get("battery")
        self.adc = None
        if self.batt:
            try:
                self.adc = machine.ADC(machine.Pin(self.batt["pin"]))
                self.adc.atten(machine.ADC.ATTN_11DB)
            except (ValueError, OSError, AttributeError, KeyError):
                self.adc = None

    def led(self, on):
        if self.pin is not None:
            self.pin.value(1 if bool(on) != self.active_low else 0)

    def blink(self, code):
        for _ in range(code):
            self.led(1)
            sleep_ms(200)
            self.led(0)
            sleep_ms(250)
        sleep_ms(1200)

    def battery(self):
        # Percent 0..100 from the battery divider, or None on mains power / no ADC.
        if self.adc is None:
            return None
        try:
            mv = self.adc.read_uv() / 1000 * self.batt.get("divider", 2.0)
        except (OSError, AttributeError):
            return None
        lo = self.batt.get("empty_mv", 3300)
        hi = self.batt.get("full_mv", 4200)
        pct = int(100 * (mv - lo) / (hi - lo))
        return 0 if pct < 0 else 100 if pct > 100 else pct

    def cpu_mhz(self):
        try:
            return machine.freq() // 1000000
        except (AttributeError, OSError):
            return None

    def deepsleep(self, ms):
        self.led(0)
        machine.deepsleep(ms)

    def reset(self):
        machine.reset()


def halt(board, code, message):
    # A fault only a person can fix (config): say so on the REPL and blink the code until
    # someone connects; no reset, so no crash loop. Ctrl-C on the REPL still interrupts.
    n = 0
    while True:
        if n % 10 == 0:
            print("\n*** fog edge stopped (blink code %d): %s" % (code, message))
            print("*** fix it, then press reset (Ctrl-C gives the REPL)\n")
        board.blink(code)
        n += 1


def back_off(board, st, code, message, max_s=3600):
    # A fault that may pass (network, broker, sensor wiring, a bug): report it, blink the
    # code, then deep-sleep 10 s, 20 s, 40 s ... (up to max_s) per consecutive failure.
    st.crashes += 1
    try:
        st.save()
    except OSError as exc:  # a full or failing flash must not stop the back-off
        print("state not saved: %r" % (exc,))
    wait_s = min(max_s, 10 * (1 << min(st.crashes - 1, 12)))
    print("\n*** fog edge: %s (blink code %d); failure %d in a row, sleeping %d s"
          % (message, code, st.crashes, wait_s))
    for _ in range(3):
        board.blink(code)
    board.deepsleep(wait_s * 1000)
