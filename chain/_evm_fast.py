"""A faster py-evm for the embedded chain: the same EVM, with its interpreter's hottest paths made lean.

A settle batch runs ~5,000 opcodes per task through py-evm, and py-evm spends most of that time in call
layers around each opcode (gas meter, stack helpers, validation of values that are valid by construction).
``speed_up_pyevm()`` patches, process-wide and idempotently:

- the interpreter loop (``BaseComputation.apply_computation``): the stack, flow, arithmetic and memory opcodes
  that make up ~95% of a settlement (PUSH*, POP, JUMPDEST, DUP*, SWAP*, JUMP, JUMPI, ADD, SUB, MUL, LT, GT,
  SLT, EQ, ISZERO, AND, OR, NOT, SHL, SHR, MLOAD, MSTORE, CALLDATALOAD, CALLDATASIZE) run inline, charging
  the fork's own gas cost for each (memory growth through py-evm's own ``extend_memory``); every other opcode
  runs py-evm's own implementation, as before;
- the gas meter, the stack and the memory helpers that those other opcodes call.

Semantics are py-evm's: the same gas, the same results, the same exception classes (OutOfGas,
InsufficientStack, FullStack, InvalidJumpDestination, InvalidInstruction) where py-evm raises them, so a
failing computation burns and reverts exactly as before. The chain test suites (contract behaviour,
reverts, properties, the same client tests against Hardhat) run on the patched EVM. ``SLOW_PYEVM=1`` in the
environment leaves py-evm untouched (A/B checks); with py-evm's debug2 tracing on, its own loop runs.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["speed_up_pyevm"]

_SPED_UP = False
_ORIGINAL: dict[str, Any] = {}  # py-evm's own loop, for the A/B test
_MAX = 2**256 - 1
_JUMPDEST = 0x5B
# kinds of inlined opcodes
(_PUSH, _POP, _JUMPDEST_K, _DUP, _SWAP, _JUMP, _JUMPI, _ADD, _SUB, _LT, _GT, _EQ, _ISZERO, _AND, _OR, _NOT,
 _SHL, _SHR, _MUL, _SLT, _MSTORE, _MLOAD, _CALLDATALOAD, _CALLDATASIZE) = range(24)  # fmt: skip
_SIMPLE = {"POP": _POP, "JUMPDEST": _JUMPDEST_K, "JUMP": _JUMP, "JUMPI": _JUMPI, "ADD": _ADD, "SUB": _SUB, "LT": _LT,
           "GT": _GT, "EQ": _EQ, "ISZERO": _ISZERO, "AND": _AND, "OR": _OR, "NOT": _NOT, "SHL": _SHL, "SHR": _SHR,
           "MUL": _MUL, "SLT": _SLT, "MSTORE": _MSTORE, "MLOAD": _MLOAD, "CALLDATALOAD": _CALLDATALOAD,
           "CALLDATASIZE": _CALLDATASIZE}  # fmt: skip
_INT255 = 2**255 - 1
_CEIL256 = 2**256


def _kinds(opcodes: dict, fast_cls: type) -> list[tuple[int, int, int, str] | None]:
    """Per opcode byte: (kind, argument, gas cost, mnemonic) when it runs inline, else None."""
    table: list[tuple[int, int, int, str] | None] = [None] * 256
    for byte, fn in opcodes.items():
        if type(fn) is not fast_cls:
            continue
        m = fn.mnemonic
        if m.startswith("PUSH") and m[4:].isdigit() and int(m[4:]) == byte - 0x5F:
            table[byte] = (_PUSH, int(m[4:]), fn.gas_cost, m)
        elif m.startswith("DUP") and m[3:].isdigit() and int(m[3:]) == byte - 0x7F:
            table[byte] = (_DUP, int(m[3:]), fn.gas_cost, m)
        elif m.startswith("SWAP") and m[4:].isdigit() and int(m[4:]) == byte - 0x8F:
            table[byte] = (_SWAP, int(m[4:]), fn.gas_cost, m)
        elif m in _SIMPLE:
            table[byte] = (_SIMPLE[m], 0, fn.gas_cost, m)
    return table


def _fast_loop(computation: Any, kinds: list, lookup: dict, exc: Any) -> None:
    """Runs `computation`'s code until it halts (py-evm's loop, with the common opcodes inline).

    The program counter and the gas left live in locals while inline opcodes run (`synced` False); they
    are written back before anything of py-evm runs (an opcode, memory growth) and read back after it, so
    py-evm always sees, and an exception always leaves, the values py-evm's own loop would have."""
    Halt, InvalidOpcode, InsufficientStack, FullStack, InvalidJumpDestination, InvalidInstruction = exc
    code = computation.code
    raw = code._raw_code_bytes
    n = len(raw)
    values = computation._stack.values
    append = values.append
    pop = values.pop
    meter = computation._gas_meter
    calldata = computation.msg.data_as_bytes
    pc = code.program_counter
    gas_left = meter.gas_remaining
    synced = True
    try:
        while True:
            opcode = raw[pc] if pc < n else 0  # past the end: STOP, as CodeStream yields it
            pc += 1
            k = kinds[opcode]
            if k is None:
                code.program_counter = pc
                meter.gas_remaining = gas_left
                synced = True
                fn = lookup.get(opcode)
                if fn is None:
                    fn = InvalidOpcode(opcode)
                try:
                    fn(computation=computation)
                except Halt:
                    return
                pc = code.program_counter
                gas_left = meter.gas_remaining
                continue
            synced = False
            kind, arg, cost, mnemonic = k
            if cost > gas_left:
                meter.gas_remaining = gas_left
                synced = True
                meter.consume_gas(cost, mnemonic)  # raises OutOfGas
            gas_left -= cost
            if kind == _PUSH:
                end = pc + arg
                data = raw[pc:end]
                pc = end
                if len(data) != arg:
                    data = data.ljust(arg, b"\x00")
                if len(values) > 1023:
                    raise FullStack("Stack limit reached")
                append(data)
            elif kind == _JUMPDEST_K:
                pass
            elif kind == _POP:
                if not values:
                    raise InsufficientStack("Wanted 1 stack item, had none")
                pop()
            elif kind == _DUP:
                if len(values) > 1023:
                    raise FullStack("Stack limit reached")
                if arg > len(values):
                    raise InsufficientStack(f"Insufficient stack items for DUP{arg}")
                append(values[-arg])
            elif kind == _SWAP:
                if arg + 1 > len(values):
                    raise InsufficientStack(f"Insufficient stack items for SWAP{arg}")
                values[-1], values[-arg - 1] = values[-arg - 1], values[-1]
            elif kind == _JUMP or kind == _JUMPI:
                if kind == _JUMP:
                    if not values:
                        raise InsufficientStack("Wanted 1 stack item, had none")
                    dest = pop()
                    cond = 1
                else:
                    if len(values) < 2:
                        raise InsufficientStack(f"Wanted 2 stack items, only had {len(values)}")
                    dest = pop()
                    cond = pop()
                    if cond.__class__ is not int:
                        cond = int.from_bytes(cond, "big")
                if cond:
                    if dest.__class__ is not int:
                        dest = int.from_bytes(dest, "big")
                    pc = dest
                    if (raw[dest] if dest < n else 0) != _JUMPDEST:
                        raise InvalidJumpDestination("Invalid Jump Destination")
                    if not code.is_valid_opcode(dest):
                        raise InvalidInstruction("Jump resulted in invalid instruction")
            elif kind == _MSTORE:  # py-evm: pop start, pop value, grow memory (gas), write 32 bytes
                if len(values) < 2:
                    raise InsufficientStack(f"Wanted 2 stack items, only had {len(values)}")
                a = pop()
                b = pop()
                if a.__class__ is not int:
                    a = int.from_bytes(a, "big")
                b = b.to_bytes(32, "big") if b.__class__ is int else b.rjust(32, b"\x00")[-32:]
                meter.gas_remaining = gas_left
                synced = True
                computation.extend_memory(a, 32)
                gas_left = meter.gas_remaining
                synced = False
                computation._memory._bytes[a : a + 32] = b
            elif kind == _MLOAD:
                if not values:
                    raise InsufficientStack("Wanted 1 stack item, had none")
                a = pop()
                if a.__class__ is not int:
                    a = int.from_bytes(a, "big")
                meter.gas_remaining = gas_left
                synced = True
                computation.extend_memory(a, 32)
                gas_left = meter.gas_remaining
                synced = False
                append(bytes(computation._memory._bytes[a : a + 32]))
            elif kind == _CALLDATALOAD:
                if not values:
                    raise InsufficientStack("Wanted 1 stack item, had none")
                a = pop()
                if a.__class__ is not int:
                    a = int.from_bytes(a, "big")
                append(calldata[a : a + 32].ljust(32, b"\x00").lstrip(b"\x00"))
            elif kind == _CALLDATASIZE:
                if len(values) > 1023:
                    raise FullStack("Stack limit reached")
                append(len(computation.msg.data))
            elif kind == _ISZERO or kind == _NOT:
                if not values:
                    raise InsufficientStack("Wanted 1 stack item, had none")
                a = pop()
                if a.__class__ is not int:
                    a = int.from_bytes(a, "big")
                append((1 if a == 0 else 0) if kind == _ISZERO else _MAX - a)
            else:  # two operands, one result
                if len(values) < 2:
                    raise InsufficientStack(f"Wanted 2 stack items, only had {len(values)}")
                a = pop()  # the top: py-evm's `left` (SHL/SHR: the shift)
                b = pop()
                if a.__class__ is not int:
                    a = int.from_bytes(a, "big")
                if b.__class__ is not int:
                    b = int.from_bytes(b, "big")
                if kind == _ADD:
                    append((a + b) & _MAX)
                elif kind == _SUB:
                    append((a - b) & _MAX)
                elif kind == _AND:
                    append(a & b)
                elif kind == _LT:
                    append(1 if a < b else 0)
                elif kind == _GT:
                    append(1 if a > b else 0)
                elif kind == _EQ:
                    append(1 if a == b else 0)
                elif kind == _OR:
                    append(a | b)
                elif kind == _MUL:
                    append((a * b) & _MAX)
                elif kind == _SLT:
                    append(1 if (a if a <= _INT255 else a - _CEIL256) < (b if b <= _INT255 else b - _CEIL256) else 0)
                elif kind == _SHL:
                    append(0 if a >= 256 else (b << a) & _MAX)
                else:  # _SHR
                    append(0 if a >= 256 else b >> a)
    finally:
        if not synced:  # an inline opcode raised: leave py-evm's state as its own loop would
            code.program_counter = pc
            meter.gas_remaining = gas_left


def _patch_interpreter() -> None:
    from eth.exceptions import FullStack, Halt, InsufficientStack, InvalidInstruction, InvalidJumpDestination
    from eth.vm import computation as _computation
    from eth.vm import opcode as _opcode
    from eth.vm.logic.invalid import InvalidOpcode

    base = _computation.BaseComputation
    original = base.apply_computation.__func__
    no_result = _computation.NO_RESULT
    exc = (Halt, InvalidOpcode, InsufficientStack, FullStack, InvalidJumpDestination, InvalidInstruction)
    tables: dict[int, list] = {}

    def apply_computation(cls, state, message, transaction_context, parent_computation=None):
        if cls.logger.show_debug2:  # py-evm's own loop traces every opcode
            return original(cls, state, message, transaction_context, parent_computation)
        with cls(state, message, transaction_context) as computation:
            # -- as py-evm's apply_computation --
            if computation.is_origin_computation:
                computation.contracts_created = []
                if message.is_create:
                    cls.consume_initcode_gas_cost(computation)
            if parent_computation is not None:
                computation.contracts_created = parent_computation.contracts_created
            if message.is_create:
                computation.contracts_created.append(message.storage_address)
            precompile = computation.precompiles.get(message.code_address, no_result)
            if precompile is not no_result:
                if not message.is_delegation:
                    precompile(computation)
                return computation
            # -- the loop --
            lookup = computation.opcodes
            kinds = tables.get(id(lookup))
            if kinds is None:
                kinds = tables[id(lookup)] = _kinds(lookup, _opcode._FastOpcode)
            _fast_loop(computation, kinds, lookup, exc)
        return computation

    base.apply_computation = classmethod(apply_computation)
    _ORIGINAL["apply_computation"] = classmethod(original)
    _ORIGINAL["fast_apply_computation"] = base.__dict__["apply_computation"]


def _patch_helpers() -> None:
    from eth.exceptions import FullStack, InsufficientStack, OutOfGas
    from eth.vm import computation as _computation
    from eth.vm import gas_meter as _gas_meter
    from eth.vm import memory as _memory
    from eth.vm import opcode as _opcode
    from eth.vm import stack as _stack
    from eth_utils import ValidationError

    to_int, to_bytes = _stack.to_int, _stack.to_bytes

    def consume_gas(self, amount: int, reason: str) -> None:
        if amount < 0:
            raise ValidationError("Gas consumption amount must be positive")
        if amount > self.gas_remaining:
            raise OutOfGas(f"Out of gas: Needed {amount} - Remaining {self.gas_remaining} - Reason: {reason}")
        self.gas_remaining -= amount

    def opcode_call(self, computation) -> None:
        meter = computation._gas_meter
        amount = self.gas_cost
        if amount > meter.gas_remaining or amount < 0:
            meter.consume_gas(amount, self.mnemonic)  # raises
        meter.gas_remaining -= amount
        return self.logic_fn(computation)

    def push_int(self, value: int) -> None:
        if len(self.values) > 1023:
            raise FullStack("Stack limit reached")
        if not 0 <= value <= _MAX:
            raise ValidationError(f"Invalid Stack Item: Must be a 256 bit integer. Got {value!r}")
        self._append(value)

    def push_bytes(self, value: bytes) -> None:
        if len(self.values) > 1023:
            raise FullStack("Stack limit reached")
        if len(value) > 32:
            raise ValidationError(f"Invalid Stack Item: Must be either a length 32 byte string. Got {value!r}")
        self._append(value)

    def pop_ints(self, num_items: int) -> tuple[int, ...]:
        values = self.values
        if num_items > len(values):
            raise InsufficientStack(f"Wanted {num_items} stack items, only had {len(values)}")
        out = values[-num_items:]
        del values[-num_items:]
        out.reverse()
        return tuple([x if x.__class__ is int else to_int(x) for x in out])

    def pop_bytes(self, num_items: int) -> tuple[bytes, ...]:
        values = self.values
        if num_items > len(values):
            raise InsufficientStack(f"Wanted {num_items} stack items, only had {len(values)}")
        out = values[-num_items:]
        del values[-num_items:]
        out.reverse()
        return tuple([x if x.__class__ is bytes else to_bytes(x) for x in out])

    def pop1_int(self) -> int:
        try:
            x = self._pop()
        except IndexError:
            raise InsufficientStack("Wanted 1 stack item, had none") from None
        return x if x.__class__ is int else to_int(x)

    extend_memory = _computation.BaseComputation.extend_memory

    def fast_extend_memory(self, start_position: int, size: int) -> None:
        # Memory is always a multiple of 32 bytes long: a range inside it costs no gas and grows nothing.
        if (start_position.__class__ is int and size.__class__ is int and 0 <= start_position <= _MAX
                and 0 < size <= _MAX and (start_position + size + 31) & ~31 <= len(self._memory)):  # fmt: skip
            return
        extend_memory(self, start_position, size)

    write = _memory.Memory.write

    def fast_write(self, start_position: int, size: int, value: bytes) -> None:
        end = start_position + size
        if (size and start_position.__class__ is int and size.__class__ is int and value.__class__ is bytes
                and 0 <= start_position and 0 < size <= _MAX and len(value) == size
                and end <= len(self._bytes)):  # fmt: skip
            self._bytes[start_position:end] = value
            return
        write(self, start_position, size, value)

    _gas_meter.GasMeter.consume_gas = consume_gas
    _opcode._FastOpcode.__call__ = opcode_call
    _stack.Stack.push_int = push_int
    _stack.Stack.push_bytes = push_bytes
    _stack.Stack.pop_ints = pop_ints
    _stack.Stack.pop_bytes = pop_bytes
    _stack.Stack.pop1_int = pop1_int
    _computation.BaseComputation.extend_memory = fast_extend_memory
    _memory.Memory.write = fast_write


def speed_up_pyevm() -> None:
    """Patches py-evm once per process (see the module docstring); `SLOW_PYEVM=1` skips it."""
    global _SPED_UP
    if _SPED_UP or os.environ.get("SLOW_PYEVM") == "1":
        return
    _SPED_UP = True
    _patch_helpers()
    _patch_interpreter()
