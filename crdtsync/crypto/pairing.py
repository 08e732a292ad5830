"""Pairing a new device by a short code (pure: no IO, no clock; randomness and time come in as arguments).

**The code.** ``7-cobalt-harbor`` style: ``<number>-<word>-<word>``. The number (1 to :data:`MAX_NUMBER`) names
the invitation: it is not secret (a joiner uses it to find the right inviter, and it is bound into the key
exchange). The two words are the secret: the first from the even and the second from the odd half of the PGP
word list (Juola and Zimmermann, public domain; 256 two-syllable and 256 three-syllable words, every one
distinct, chosen to be told apart when read aloud; a swapped pair is heard as the wrong rhythm). That is
8 + 8 = **16 bits** of secret. It is enough because SPAKE2 makes an online guess the only attack: a recorded
exchange, or a failed attempt, says nothing that would let anyone test other codes offline, and the inviter
allows :data:`MAX_FAILURES` (3) failed attempts per code before it withdraws it, so a guesser wins with
probability 3 / 65536 (about 1 in 21,800) per invitation, and a code lives :data:`INVITATION_SECONDS` (10
minutes) and one successful join at most.

**The exchange** (after the joiner's first bytes, the 8-byte :data:`MAGIC`, which no sync connection starts
with). Frames are a 2-byte big-endian length (1 .. :data:`MAX_FRAME`) and a msgpack map, unpacked with tight
limits; the joiner (J) connects to the inviter (I)::

    J -> I   MAGIC, {"t": "pake", "v": 1, "n": number, "m": SPAKE2 message (33 bytes)}
    I -> J   {"t": "pake", "v": 1, "n": number, "m": SPAKE2 message}   or an error frame
    J -> I   {"t": "confirm", "mac": HMAC-SHA256(confirmation key of J, "joiner" + transcript)}
    I -> J   {"t": "confirm", "mac": HMAC-SHA256(confirmation key of I, "inviter" + transcript)}  or an error
    ...      sealed records both ways (:class:`RecordSealer`, :class:`RecordOpener`)

An error frame is ``{"t": "error", "code": "PAIRING_...", "message": ...}`` and ends the exchange. SPAKE2 is
``spake2.SPAKE2_Symmetric`` (Ed25519 group) with the two words as password and ``idSymmetric`` =
``b"crdtsync/pairing/v1/invitation/<number>"``, so a code of another invitation never agrees. SPAKE2 gives
no key confirmation: both derive, with HKDF-SHA256 of the SPAKE2 key (salt = the transcript hash: label,
number and both SPAKE2 messages in order), one confirmation key and one channel key per direction. The joiner
proves first; the inviter checks the joiner's MAC in constant time before it sends its own, so a wrong code
learns nothing from the inviter but "wrong", and costs one attempt.

**The sealed channel** that follows: records of a 4-byte big-endian length and a ChaCha20-Poly1305 ciphertext
of one kind byte (0 data, 1 end) and up to :data:`MAX_RECORD` bytes; the nonce is the direction's record
counter (so a replayed, reordered, dropped or altered record fails to open), and the END record marks a clean
end (a stream that stops without it was cut).

Errors are :class:`~crdtsync.errors.LanError` with the codes ``PAIRING_CODE_INVALID`` (a code that does not
parse), ``PAIRING_WRONG_CODE``, ``PAIRING_WITHDRAWN`` (three failed attempts, or used already),
``PAIRING_EXPIRED`` and ``PAIRING_MALFORMED`` (a frame or record that breaks these rules).
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_Symmetric

from crdtsync.crypto.header import MAX_HEADER_BYTES, VaultHeader, key_commitment
from crdtsync.errors import CrdtsyncError, LanError

#: The first bytes a joiner sends: no TLS record, knock or session frame starts so.
MAGIC: Final = b"CSYPAIR1"
#: Label of this protocol in every derivation.
LABEL: Final = b"crdtsync/pairing/v1"
#: The version field of a pake frame.
VERSION: Final = 1
#: Largest invitation number.
MAX_NUMBER: Final = 999
#: How long an invitation is valid, in seconds.
INVITATION_SECONDS: Final = 600.0
#: Failed attempts an invitation allows; the last one withdraws it.
MAX_FAILURES: Final = 3
#: Largest handshake frame (after its 2-byte prefix), in bytes.
MAX_FRAME: Final = 1024
#: Largest record payload, in bytes (a record on the wire is 4 + 1 + this + 16 bytes at most).
MAX_RECORD: Final = 64 * 1024
#: Largest grant message (:class:`Grant`), in bytes.
MAX_GRANT: Final = 4 * 1024 * 1024
#: Most relays a grant carries.
MAX_RELAYS: Final = 64
#: A string that parses as a pairing code (the CLI routes ``join`` arguments by it).
CODE_PATTERN: Final = re.compile(r"^\d+-[a-z]+-[a-z]+$")

_EVEN = """
aardvark absurd accrue acme adrift adult afflict ahead aimless algol allow alone ammo ancient apple artist
assume athens atlas aztec baboon backfield backward banjo beaming bedlamp beehive beeswax befriend belfast
berserk billiard bison blackjack blockade blowtorch bluebird bombast bookshelf brackish breadline breakup
brickyard briefcase burbank button buzzard cement chairlift chatter checkup chisel choking chopper christmas
clamshell classic classroom cleanup clockwork cobra commence concert cowbell crackdown cranky crowfoot crucial
crumpled crusade cubic dashboard deadbolt deckhand dogsled dragnet drainage dreadful drifter dropper drumbeat
drunken dupont dwelling eating edict egghead eightball endorse endow enlist erase escape exceed eyeglass
eyetooth facial fallout flagpole flatfoot flytrap fracture framework freedom frighten gazelle geiger glitter
glucose goggles goldfish gremlin guidance hamlet highchair hockey indoors indulge inverse involve island
jawbone keyboard kickoff kiwi klaxon locale lockup merit minnow miser mohawk mural music necklace neptune
newborn nightbird oakland obtuse offload optic orca payday peachy pheasant physique playhouse pluto preclude
prefer preshrunk printer prowler pupil puppy python quadrant quiver quota ragtime ratchet rebirth reform
regain reindeer rematch repay retouch revenge reward rhythm ribcage ringbolt robust rocker ruffled sailboat
sawdust scallion scenic scorecard scotland seabird select sentence shadow shamrock showgirl skullcap skydive
slingshot slowdown snapline snapshot snowcap snowslide solo southward soybean spaniel spearhead spellbind
spheroid spigot spindle spyglass stagehand stagnate stairway standard stapler steamship sterling stockman
stopwatch stormy sugar surmount suspense sweatband swelter tactics talon tapeworm tempest tiger tissue tonic
topmost tracker transit trauma treadmill trojan trouble tumor tunnel tycoon uncut unearth unwind uproot upset
upshot vapor village virus vulcan waffle wallet watchword wayside willow woodlark zulu
"""
_ODD = """
adroitness adviser aftermath aggregate alkali almighty amulet amusement antenna applicant apollo armistice
article asteroid atlantic atmosphere autopsy babylon backwater barbecue belowground bifocals bodyguard
bookseller borderline bottomless bradbury bravado brazilian breakaway burlington businessman butterfat
camelot candidate cannonball capricorn caravan caretaker celebrate cellulose certify chambermaid cherokee
chicago clergyman coherence combustion commando company component concurrent confidence conformist congregate
consensus consulting corporate corrosion councilman crossover crucifix cumbersome customer dakota decadence
december decimal designing detector detergent determine dictator dinosaur direction disable disbelief
disruptive distortion document embezzle enchanting enrollment enterprise equation equipment escapade eskimo
everyday examine existence exodus fascinate filament finicky forever fortitude frequency gadgetry galveston
getaway glossary gossamer graduate gravity guitarist hamburger hamilton handiwork hazardous headwaters
hemisphere hesitate hideaway holiness hurricane hydraulic impartial impetus inception indigo inertia infancy
inferno informant insincere insurgent integrate intention inventive istanbul jamaica jupiter leprosy
letterhead liberty maritime matchmaker maverick medusa megaton microscope microwave midsummer millionaire
miracle misnomer molasses molecule montana monument mosquito narrative nebula newsletter norwegian october
ohio onlooker opulent orlando outfielder pacific pandemic pandora paperweight paragon paragraph paramount
passenger pedigree pegasus penetrate perceptive performance pharmacy phonetic photograph pioneer pocketful
politeness positive potato processor provincial proximate puberty publisher pyramid quantity racketeer
rebellion recipe recover repellent replica reproduce resistor responsive retraction retrieval retrospect
revenue revival revolver sandalwood sardonic saturday savagery scavenger sensation sociable souvenir
specialist speculate stethoscope stupendous supportive surrender suspicious sympathy tambourine telephone
therapist tobacco tolerance tomorrow torpedo tradition travesty trombonist truncated typewriter ultimate
undaunted underfoot unicorn unify universe unravel upcoming vacancy vagabond vertigo virginia visitor
vocalist voyager warranty waterloo whimsical wichita wilmington wyoming yesteryear yucatan
"""
#: The first word of a code: the even (two-syllable) half of the PGP word list, lowercased.
FIRST_WORDS: Final[tuple[str, ...]] = tuple(_EVEN.split())
#: The second word of a code: the odd (three-syllable) half of the PGP word list, lowercased.
SECOND_WORDS: Final[tuple[str, ...]] = tuple(_ODD.split())
_FIRST_INDEX = {word: i for i, word in enumerate(FIRST_WORDS)}
_SECOND_INDEX = {word: i for i, word in enumerate(SECOND_WORDS)}

RandBytes = Callable[[int], bytes]


# -- the code ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairingCode:
    """A pairing code: the invitation ``number`` and the two secret words."""

    number: int
    first: str
    second: str

    def __str__(self) -> str:
        return f"{self.number}-{self.first}-{self.second}"

    @property
    def password(self) -> bytes:
        """The SPAKE2 password: the two words (the number is bound by :meth:`identity`)."""
        return f"{self.first}-{self.second}".encode()

    @property
    def identity(self) -> bytes:
        """The SPAKE2 ``idSymmetric``: the protocol label and the invitation number."""
        return LABEL + b"/invitation/" + str(self.number).encode()

    @property
    def discovery_key(self) -> bytes:
        """The 32-byte key the invitation's mDNS announcement is tagged with (:mod:`crdtsync.discovery`):
        SHA-256 of the label and the invitation number, never of the words. It is no secret (anyone can compute
        it for each of the 999 numbers); it lets a joiner pick the announcement of its invitation out of the
        others on the LAN, and tells an observer no more than the number, which the joiner's first frame
        carries in the clear anyway. An impostor announcing the same number gets one online guess at the
        words, as any other attempt does."""
        return hashlib.sha256(LABEL + b"/discovery/" + str(self.number).encode()).digest()


def new_code(randbytes: RandBytes) -> PairingCode:
    """A fresh code from ``randbytes`` (``os.urandom`` in use): a number 1 .. MAX_NUMBER and two words, each
    word uniform over its 256."""
    raw = randbytes(4)
    number = 1 + int.from_bytes(raw[:2], "big") % MAX_NUMBER  # public: a small bias does not matter
    return PairingCode(number, FIRST_WORDS[raw[2]], SECOND_WORDS[raw[3]])


def looks_like_code(text: str) -> bool:
    """Whether ``text`` has the shape of a pairing code (digits, a word, a word, joined by ``-``)."""
    return bool(CODE_PATTERN.match(text.strip().lower()))


def parse_code(text: str) -> PairingCode:
    """The code ``text`` spells (case and surrounding blanks ignored).

    Raises:
        LanError: ``PAIRING_CODE_INVALID``: not ``NUMBER-WORD-WORD``, a number out of range, or a word not in
            its list (the message says which).
    """
    given = text.strip().lower()
    if not CODE_PATTERN.match(given):
        raise LanError(f"{text[:60]!r} is not a pairing code: it looks like 7-cobra-hamburger (a number and two "
                       "words, as `crdtsync invite` printed it)", code="PAIRING_CODE_INVALID")
    number_text, first, second = given.split("-")
    number = int(number_text)
    if not 1 <= number <= MAX_NUMBER or number_text != str(number):
        raise LanError(f"{number_text} is not an invitation number (1 to {MAX_NUMBER}): check the code that "
                       "`crdtsync invite` printed", code="PAIRING_CODE_INVALID")
    for word, index, place in ((first, _FIRST_INDEX, "first"), (second, _SECOND_INDEX, "second")):
        if word not in index:
            raise LanError(f"{word!r} is not a {place} word of a pairing code: check the spelling of the code "
                           "that `crdtsync invite` printed", code="PAIRING_CODE_INVALID")
    return PairingCode(number, first, second)


# -- the invitation ---------------------------------------------------------------------------------------


class InvitationState(enum.Enum):
    """Where an invitation stands."""

    OPEN = "open"
    CLAIMED = "claimed"  # a joiner proved the code: the code is spent, whatever happens next
    WITHDRAWN = "withdrawn"  # MAX_FAILURES failed attempts


@dataclass
class Invitation:
    """The inviter's policy for one code: valid ``seconds`` from ``created`` (times on any monotonic clock, in
    seconds), for one successful join, and withdrawn after ``max_failures`` failed attempts."""

    code: PairingCode
    created: float
    seconds: float = INVITATION_SECONDS
    max_failures: int = MAX_FAILURES
    failures: int = 0
    state: InvitationState = InvitationState.OPEN

    @property
    def expires(self) -> float:
        """When it stops being valid (same clock as ``created``)."""
        return self.created + self.seconds

    def check_open(self, now: float) -> None:
        """Raise unless a joiner may try the code at ``now``.

        Raises:
            LanError: ``PAIRING_WITHDRAWN`` (failed attempts, or used already), ``PAIRING_EXPIRED``.
        """
        if self.state is InvitationState.CLAIMED:
            raise LanError("this invitation was used by a device that joined, and a code works once: run "
                           "`crdtsync invite` again on a device of the vault for a new code", code="PAIRING_WITHDRAWN")
        if self.state is InvitationState.WITHDRAWN:
            raise _withdrawn(self.max_failures)
        if now >= self.expires:
            raise LanError(f"this invitation expired ({self.seconds:g} s after it was made): run `crdtsync invite` "
                           "again for a new code", code="PAIRING_EXPIRED")

    def fail(self) -> LanError:
        """Count a failed attempt (a wrong code); returns the error both sides report for it:
        ``PAIRING_WRONG_CODE`` with the attempts left, or ``PAIRING_WITHDRAWN`` for the last one."""
        self.failures += 1
        if self.failures >= self.max_failures:
            self.state = InvitationState.WITHDRAWN
            return _withdrawn(self.max_failures)
        left = self.max_failures - self.failures
        return LanError(f"wrong pairing code ({left} attempt{'s' if left > 1 else ''} left for this invitation): "
                        "check the code the inviting device shows and try again", code="PAIRING_WRONG_CODE")

    def claim(self) -> None:
        """A joiner proved the code: the code is spent (no second join, whatever happens next)."""
        self.state = InvitationState.CLAIMED


def _withdrawn(limit: int) -> LanError:
    return LanError(f"wrong pairing code, and that was the last of {limit} attempts: the invitation is withdrawn. "
                    "Run `crdtsync invite` again for a new code", code="PAIRING_WITHDRAWN")


# -- keys -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelKeys:
    """The keys a confirmed exchange gives one side: ``send`` and ``receive`` (32 bytes each, one per direction)
    for the sealed channel, and the ``transcript`` hash both sides agree on."""

    send: bytes = field(repr=False)
    receive: bytes = field(repr=False)
    transcript: bytes


def _derive(secret: bytes, transcript: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=transcript, info=LABEL + b"/" + purpose).derive(secret)


def transcript_hash(number: int, joiner_message: bytes, inviter_message: bytes) -> bytes:
    """SHA-256 of the label, the invitation number and both SPAKE2 messages (joiner's first)."""
    return hashlib.sha256(b"".join([LABEL, b"\0", number.to_bytes(4, "big"),
                                    len(joiner_message).to_bytes(2, "big"), joiner_message,
                                    len(inviter_message).to_bytes(2, "big"), inviter_message])).digest()


def confirmation(secret: bytes, transcript: bytes, side: str) -> bytes:
    """The MAC ``side`` (``"joiner"`` or ``"inviter"``) sends: HMAC-SHA256 under its confirmation key (HKDF of
    the SPAKE2 key ``secret``) over the side's name and the transcript hash."""
    mac = hmac.HMAC(_derive(secret, transcript, b"confirm/" + side.encode()), hashes.SHA256())
    mac.update(side.encode() + b"\0" + transcript)
    return mac.finalize()


def confirmation_ok(secret: bytes, transcript: bytes, side: str, received: bytes) -> bool:
    """Whether ``received`` is ``side``'s confirmation MAC (compared in constant time)."""
    mac = hmac.HMAC(_derive(secret, transcript, b"confirm/" + side.encode()), hashes.SHA256())
    mac.update(side.encode() + b"\0" + transcript)
    try:
        mac.verify(received)
    except InvalidSignature:
        return False
    return True


def channel_keys(secret: bytes, transcript: bytes, side: str) -> ChannelKeys:
    """The channel keys of ``side``: one key per direction, HKDF of the SPAKE2 key."""
    to_inviter = _derive(secret, transcript, b"channel/joiner-to-inviter")
    to_joiner = _derive(secret, transcript, b"channel/inviter-to-joiner")
    if side == "joiner":
        return ChannelKeys(to_inviter, to_joiner, transcript)
    return ChannelKeys(to_joiner, to_inviter, transcript)


# -- handshake frames -------------------------------------------------------------------------------------


def _malformed(what: str, hint: str = "not a crdtsync pairing peer of this version?") -> LanError:
    return LanError(f"the other device sent {what}: {hint}", code="PAIRING_MALFORMED")


def frame(fields: dict[str, Any]) -> bytes:
    """A handshake frame: 2-byte length and the msgpack of ``fields``."""
    body: bytes = msgpack.packb(fields, use_bin_type=True)
    if not 0 < len(body) <= MAX_FRAME:
        raise ValueError("a handshake frame is 1 .. MAX_FRAME bytes")
    return len(body).to_bytes(2, "big") + body


def error_frame(error: CrdtsyncError) -> bytes:
    """The error frame that tells the peer ``error`` (its code and message, the message cut to fit)."""
    return frame({"t": "error", "code": error.code, "message": error.message[:800]})


class _Frames:
    """Unparsed handshake bytes and the frames in them."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def take(self) -> dict[str, Any] | None:
        if len(self.buffer) < 2:
            return None
        length = int.from_bytes(self.buffer[:2], "big")
        if not 0 < length <= MAX_FRAME:
            raise _malformed(f"a handshake frame of {length} bytes")
        if len(self.buffer) < 2 + length:
            return None
        body = bytes(self.buffer[2:2 + length])
        del self.buffer[:2 + length]
        try:
            fields = msgpack.unpackb(body, raw=False, strict_map_key=True, max_bin_len=64, max_str_len=MAX_FRAME,
                                     max_array_len=0, max_map_len=8, max_ext_len=0)
        except Exception:
            raise _malformed("a handshake frame that is not msgpack within limits") from None
        if not isinstance(fields, dict) or not isinstance(fields.get("t"), str):
            raise _malformed("a handshake frame that is not a map with a type")
        return fields


def _expect(fields: dict[str, Any], kind: str, *names: str) -> dict[str, Any]:
    if fields["t"] == "error" and fields.keys() == {"t", "code", "message"}:
        code, message = fields["code"], fields["message"]
        if isinstance(code, str) and re.fullmatch(r"(PAIRING|LAN)_[A-Z_]{1,40}", code) and isinstance(message, str):
            shown = "".join(c if c.isprintable() else "\ufffd" for c in message)
            raise LanError(f"the other device says: {shown}", code=code)
        raise _malformed("an error frame with a bad code")
    if fields["t"] != kind or fields.keys() != {"t", *names}:
        raise _malformed(f"a {fields['t'][:20]!r} frame where a {kind!r} frame was due")
    return fields


def _pake_fields(fields: dict[str, Any]) -> tuple[int, bytes]:
    fields = _expect(fields, "pake", "v", "n", "m")
    version, number, message = fields["v"], fields["n"], fields["m"]
    if version != VERSION:
        raise LanError(f"the other device speaks pairing version {version!r}, this one {VERSION}: update crdtsync "
                       "on the older one", code="PAIRING_MALFORMED")
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= MAX_NUMBER:
        raise _malformed("a bad invitation number")
    if not isinstance(message, bytes) or len(message) != 33:
        raise _malformed("a SPAKE2 message that is not 33 bytes")
    return number, message


def _mac_field(fields: dict[str, Any]) -> bytes:
    mac = _expect(fields, "confirm", "mac")["mac"]
    if not isinstance(mac, bytes) or len(mac) != 32:
        raise _malformed("a confirmation that is not 32 bytes")
    return mac


def _spake_finish(pake: SPAKE2_Symmetric, message: bytes) -> bytes:
    try:
        key: bytes = pake.finish(message)
    except Exception as exc:  # SPAKEError (a reflected message), spake2's NotOnCurve, ValueError...
        raise _malformed(f"a SPAKE2 message that does not finish ({type(exc).__name__})") from None
    return key


class JoinerHandshake:
    """The joiner's side of the exchange (module docstring): :meth:`start`, then :meth:`receive_data` with what
    the inviter sends until :attr:`keys` is set.

    Args:
        code: the code the person typed.
        randbytes: SPAKE2's entropy (``os.urandom`` in use).
    """

    def __init__(self, code: PairingCode, randbytes: RandBytes) -> None:
        self.code = code
        self._pake = SPAKE2_Symmetric(code.password, idSymmetric=code.identity, entropy_f=randbytes)
        self._frames = _Frames()
        self._sent = b""
        self._secret: bytes | None = None
        self._transcript = b""
        #: The channel keys, once the inviter confirmed.
        self.keys: ChannelKeys | None = None

    @property
    def answered(self) -> bool:
        """Whether the other side answered as an inviter (its SPAKE2 message came)."""
        return self._secret is not None

    def start(self) -> bytes:
        """The first bytes to send: MAGIC and our SPAKE2 message."""
        self._sent = self._pake.start()
        return MAGIC + frame({"t": "pake", "v": VERSION, "n": self.code.number, "m": self._sent})

    def receive_data(self, data: bytes) -> bytes:
        """Take the inviter's bytes; returns the bytes to send (our confirmation, once its SPAKE2 message came).
        Once :attr:`keys` is set, :meth:`leftover` holds what came after its confirmation.

        Raises:
            LanError: the inviter refused (its code: ``PAIRING_WRONG_CODE``, ``PAIRING_WITHDRAWN``,
                ``PAIRING_EXPIRED``...), or sent what this protocol refuses (``PAIRING_MALFORMED``); a
                confirmation that does not verify is ``PAIRING_WRONG_CODE`` (the inviter holds another code).
        """
        if self.keys is not None:
            raise ValueError("the handshake is over: use leftover()")
        self._frames.buffer += data
        out = b""
        while self.keys is None and (fields := self._frames.take()) is not None:
            if self._secret is None:
                number, message = _pake_fields(fields)
                if number != self.code.number:
                    raise _malformed(f"invitation number {number} where {self.code.number} was asked")
                self._secret = _spake_finish(self._pake, message)
                self._transcript = transcript_hash(self.code.number, self._sent, message)
                out += frame({"t": "confirm", "mac": confirmation(self._secret, self._transcript, "joiner")})
            else:
                if not confirmation_ok(self._secret, self._transcript, "inviter", _mac_field(fields)):
                    raise LanError("the inviting device did not prove the same code: check the code and the "
                                   "address, and try again", code="PAIRING_WRONG_CODE")
                self.keys = channel_keys(self._secret, self._transcript, "joiner")
        return out

    def leftover(self) -> bytes:
        """Bytes received after the inviter's confirmation (the start of the sealed channel)."""
        return bytes(self._frames.buffer)


class InviterHandshake:
    """The inviter's side of one attempt (module docstring) under ``invitation``'s policy:
    :meth:`receive_data` with what the joiner sends, ``now`` on the clock of the invitation, until :attr:`keys`
    is set (the invitation is then claimed).

    Args:
        invitation: the invitation (shared by every attempt: its failures count across connections).
        randbytes: SPAKE2's entropy.
    """

    def __init__(self, invitation: Invitation, randbytes: RandBytes) -> None:
        self.invitation = invitation
        code = invitation.code
        self._pake = SPAKE2_Symmetric(code.password, idSymmetric=code.identity, entropy_f=randbytes)
        self._frames = _Frames()
        self._magic = False
        self._secret: bytes | None = None
        self._transcript = b""
        self.keys: ChannelKeys | None = None

    def receive_data(self, data: bytes, now: float) -> bytes:
        """Take the joiner's bytes; returns the bytes to send (our SPAKE2 message, then our confirmation).

        Raises:
            LanError: the attempt ends: ``PAIRING_MALFORMED`` (not a pairing joiner, or a broken frame; costs no
                attempt), ``PAIRING_EXPIRED``, ``PAIRING_WITHDRAWN`` (checked when it starts and when it
                confirms), ``PAIRING_WRONG_CODE`` (another code: one attempt counted; the third failure raises
                ``PAIRING_WITHDRAWN``), or another invitation number (``PAIRING_WRONG_CODE``, no attempt
                counted: the number is public). Send :func:`error_frame` of it to the joiner.
        """
        if self.keys is not None:
            raise ValueError("the handshake is over")
        self._frames.buffer += data
        if not self._magic:
            if len(self._frames.buffer) < len(MAGIC):
                if not MAGIC.startswith(bytes(self._frames.buffer)):
                    raise _malformed("bytes that are not a pairing request")
                return b""
            if self._frames.buffer[:len(MAGIC)] != MAGIC:
                raise _malformed("bytes that are not a pairing request")
            del self._frames.buffer[:len(MAGIC)]
            self._magic = True
        out = b""
        while self.keys is None and (fields := self._frames.take()) is not None:
            self.invitation.check_open(now)
            if self._secret is None:
                number, message = _pake_fields(fields)
                if number != self.invitation.code.number:
                    raise LanError(f"this device has no invitation numbered {number}: check the code (its number "
                                   "comes first) and the address", code="PAIRING_WRONG_CODE")
                sent = self._pake.start()
                self._secret = _spake_finish(self._pake, message)
                self._transcript = transcript_hash(number, message, sent)
                out += frame({"t": "pake", "v": VERSION, "n": number, "m": sent})
            else:
                if not confirmation_ok(self._secret, self._transcript, "joiner", _mac_field(fields)):
                    raise self.invitation.fail()
                if self._frames.buffer:
                    raise _malformed("bytes after its confirmation before the inviter's")
                self.invitation.claim()
                self.keys = channel_keys(self._secret, self._transcript, "inviter")
                out += frame({"t": "confirm", "mac": confirmation(self._secret, self._transcript, "inviter")})
        return out


# -- the sealed channel -----------------------------------------------------------------------------------

_DATA, _END = 0, 1
_AAD = LABEL + b"/record"


def _nonce(counter: int) -> bytes:
    return b"\0\0\0\0" + counter.to_bytes(8, "big")


class RecordSealer:
    """Seals one direction of the channel under ``key`` (module docstring)."""

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0
        self.ended = False

    def seal(self, data: bytes) -> bytes:
        """``data`` as records of at most MAX_RECORD bytes each (b"" for empty data)."""
        if self.ended:
            raise ValueError("the channel's end was sealed already")
        return b"".join(self._record(_DATA, data[i:i + MAX_RECORD]) for i in range(0, len(data), MAX_RECORD))

    def end(self) -> bytes:
        """The END record: nothing follows it."""
        out = self._record(_END, b"")
        self.ended = True
        return out

    def _record(self, kind: int, payload: bytes) -> bytes:
        if self._counter >= 2**64 - 1:
            raise ValueError("record counter exhausted")
        sealed = self._aead.encrypt(_nonce(self._counter), bytes([kind]) + payload, _AAD)
        self._counter += 1
        return len(sealed).to_bytes(4, "big") + sealed


class RecordOpener:
    """Opens the other direction of the channel under ``key``: :meth:`receive_data`, then :meth:`next_data`."""

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0
        self._buffer = bytearray()
        #: Whether the END record came (nothing may follow it).
        self.ended = False

    def receive_data(self, data: bytes) -> None:
        """Buffer ``data`` from the peer (at most one record's worth beyond what :meth:`next_data` took)."""
        self._buffer += data

    def next_data(self) -> bytes | None:
        """The payload of the next record (b"" never: an empty data record is refused), or None when a whole
        record is not there yet or the END record came (then :attr:`ended`).

        Raises:
            LanError: ``PAIRING_MALFORMED``: a record that does not open (altered, replayed, reordered, dropped,
                or under another key), of a bad size or kind, or bytes after END.
        """
        if self.ended:
            if self._buffer:
                raise _malformed("bytes after the end of the sealed channel")
            return None
        if len(self._buffer) < 4:
            return None
        length = int.from_bytes(self._buffer[:4], "big")
        if not 17 <= length <= MAX_RECORD + 17:
            raise _malformed(f"a sealed record of {length} bytes")
        if len(self._buffer) < 4 + length:
            return None
        sealed = bytes(self._buffer[4:4 + length])
        del self._buffer[:4 + length]
        try:
            plain = self._aead.decrypt(_nonce(self._counter), sealed, _AAD)
        except InvalidTag:
            raise _malformed("a sealed record that does not open (altered, replayed or out of order)",
                             "something on the network between the devices changed it; pair again") from None
        self._counter += 1
        if plain[:1] == bytes([_END]) and len(plain) == 1:
            self.ended = True
            return self.next_data()
        if plain[:1] != bytes([_DATA]) or len(plain) == 1:
            raise _malformed("a sealed record of an unknown kind")
        return plain[1:]


# -- what the inviter hands over --------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """What the inviter hands the joiner over the sealed channel: the vault's public ``header`` (``vault.json``),
    the vault key of every ``epochs`` it holds, its ``current_epoch``, the vault's ``name`` and its ``relays``
    (name, URL), as the vault keeps them."""

    header: VaultHeader
    epochs: Mapping[int, bytes] = field(repr=False)
    current_epoch: int
    name: str
    relays: tuple[tuple[str, str], ...]

    def to_bytes(self) -> bytes:
        """The msgpack of the grant."""
        packed: bytes = msgpack.packb({
            "t": "grant", "header": self.header.to_json(), "epochs": dict(self.epochs),
            "current": self.current_epoch, "name": self.name, "relays": [list(r) for r in self.relays],
        }, use_bin_type=True)
        return packed

    @classmethod
    def from_bytes(cls, data: bytes) -> Grant:
        """Parse :meth:`to_bytes`; the header must be v2 and every key must match its commitment.

        Raises:
            LanError: ``PAIRING_MALFORMED``.
        """
        if len(data) > MAX_GRANT:
            raise _malformed("a grant larger than the limit")
        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=False, max_bin_len=MAX_HEADER_BYTES,
                                  max_str_len=8192, max_array_len=MAX_RELAYS, max_map_len=1024, max_ext_len=0)
        except Exception:
            raise _malformed("a grant that is not msgpack within limits") from None
        if not isinstance(raw, dict) or raw.keys() != {"t", "header", "epochs", "current", "name", "relays"}:
            raise _malformed("a grant with other fields")
        try:
            header = VaultHeader.from_json(raw["header"]) if isinstance(raw["header"], bytes) else None
        except CrdtsyncError as exc:
            raise _malformed(f"a vault header that does not parse ({exc.code})") from None
        epochs, current, name, relays = raw["epochs"], raw["current"], raw["name"], raw["relays"]
        if header is None or not header.commits:
            raise _malformed("no v2 vault header")
        if not isinstance(epochs, dict) or not epochs or not all(
                isinstance(e, int) and not isinstance(e, bool) and isinstance(k, bytes) and len(k) == 32
                for e, k in epochs.items()):
            raise _malformed("bad vault keys")
        for epoch, key in epochs.items():
            if header.commits.get(epoch) != key_commitment(header.vault_id, epoch, key):
                raise _malformed(f"a key of epoch {epoch} that the vault header does not commit to")
        if current not in epochs or not isinstance(name, str):
            raise _malformed("a bad current epoch or name")
        if not isinstance(relays, list) or not all(
                isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r) for r in relays):
            raise _malformed("bad relays")
        return cls(header, dict(epochs), current, name, tuple((r[0], r[1]) for r in relays))
