"""Flotilla's AWS emulator: moto plus the parts of AWS that moto does not play.

    from flotilla_emulator import Emulator
    emu = Emulator(port=0).start()   # emu.endpoint -> http://127.0.0.1:<port>
    ...
    emu.stop()
"""

from .server import Emulator, main

__all__ = ["Emulator", "main"]
