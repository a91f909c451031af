"""Add a device: its id and role in, then its config and the exact flash command out."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.validation import Regex
from textual.widgets import Button, Input, Label, RadioButton, RadioSet, Static

from textual_ui.client import Refused, Unreachable

DEVICE_ID = r"[A-Za-z0-9_-]{1,32}"
SECRET_FIELDS = ("key", "password")


Submit = Callable[[str, str], Awaitable[dict[str, Any]]]
"""Provisions (device id, role) on the node; raises the client's errors."""


class ProvisionScreen(ModalScreen[dict[str, Any] | None]):
    """Asks for a device id and role and provisions it, saying so while it runs; a refusal
    (a duplicate id, …) is shown under the id and the dialog stays, with what was typed.
    Dismisses with the node's answer (or None if cancelled)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, submit: Submit) -> None:
        super().__init__()
        self.submit = submit

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Add a device", classes="dialog-title")
            yield Input(placeholder="device id, e.g. press-07", id="device-id",
                        validators=[Regex(DEVICE_ID, failure_description=(
                            "1 to 32 letters, digits, _ or -"))])
            yield Static("", id="id-problem", classes="problem", markup=False)
            with RadioSet(id="role"):
                yield RadioButton("train (runs local training)", value=True, id="train")
                yield RadioButton("offload (sends features, no training)", id="offload")
            yield Static("", id="progress", classes="hint", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Provision", variant="primary", id="ok")
                yield Button("Cancel (Esc)", id="cancel")

    @on(Input.Changed, "#device-id")
    def _validate(self, event: Input.Changed) -> None:
        problem = self.query_one("#id-problem", Static)
        if event.validation_result is None or event.validation_result.is_valid:
            problem.update("")
        else:
            problem.update("; ".join(event.validation_result.failure_descriptions))

    @on(Input.Submitted, "#device-id")
    @on(Button.Pressed, "#ok")
    def _submit(self) -> None:
        device_id = self.query_one("#device-id", Input).value.strip()
        if not re.fullmatch(DEVICE_ID, device_id):
            self.query_one("#id-problem", Static).update(
                "a device id is 1 to 32 letters, digits, _ or -")
            self.query_one("#device-id", Input).focus()
            return
        pressed = self.query_one("#role", RadioSet).pressed_button
        role = pressed.id if pressed is not None and pressed.id else "train"
        self.provision(device_id, role)

    @work(exclusive=True, group="provision")
    async def provision(self, device_id: str, role: str) -> None:
        progress = self.query_one("#progress", Static)
        ok = self.query_one("#ok", Button)
        progress.update(f"Provisioning {device_id}: key, broker account, config file…")
        ok.disabled = True
        try:
            result = await self.submit(device_id, role)
        except Refused as exc:
            self.query_one("#id-problem", Static).update(f"Not provisioned: {exc.message}")
            self.query_one("#device-id", Input).focus()
            return
        except Unreachable as exc:
            self.query_one("#id-problem", Static).update(
                f"Not provisioned: the fog node does not answer ({exc}). Try again when "
                "it is back; what you typed is kept.")
            return
        finally:
            progress.update("")
            ok.disabled = False
        self.dismiss(result)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ProvisionedScreen(ModalScreen[None]):
    """Shows a new device's config (secrets masked) and how to flash it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,enter", "close", "Close")]

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__()
        self.result = result

    def compose(self) -> ComposeResult:
        r = self.result
        with Vertical(classes="dialog wide"):
            yield Label(f"Device {r['device']} provisioned ({r['role']})",
                        classes="dialog-title")
            yield Static("Flash the board (USB) with:", classes="hint")
            yield Static(r["flash_command"], id="flash-command", classes="command",
                         markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Close (Esc)", id="close")
            yield Static(f"Its config, with its secret key, is in {r['config_path']} "
                         "(mode 0600). Secrets are masked here:", classes="hint",
                         markup=False)
            with VerticalScroll(id="config-scroll"):
                yield Static(json.dumps(masked(r["config"]), indent=2), id="config",
                             markup=False)

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)


def masked(conf: Any) -> Any:
    """The config with its secrets replaced by ``********``."""
    if isinstance(conf, dict):
        return {k: "********" if k in SECRET_FIELDS and v else masked(v) for k, v in conf.items()}
    return conf
