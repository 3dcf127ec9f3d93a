"""Who spoke and on which channel: the diarization and multichannel part of the options.

`TranscribeOptions` (options.py) inherits these fields, so the form, the jobs JSON, the
handle kwargs and a job row carry them like every other option. None of them changes the
decode (they stay out of `DecodeOptions`), except that diarize needs word timestamps.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The formats that can say who spoke (diarize=true, multichannel=true); text and json cannot.
SPEAKER_FORMATS: tuple[str, ...] = ("diarized_json", "verbose_json", "srt", "vtt")


class SpeakerOptions(BaseModel):
    """Diarization and multichannel options (the base of `TranscribeOptions`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    diarize: bool = Field(
        False,
        description="Label segments and words with their speaker (A, B, … or a known name); "
        "a segment is split where the speaker changes",
    )
    num_speakers: int | None = Field(
        None, ge=1, le=32, description="Exact number of speakers (diarize); found when unset"
    )
    min_speakers: int | None = Field(None, ge=1, le=32, description="Fewest speakers (diarize)")
    max_speakers: int | None = Field(None, ge=1, le=32, description="Most speakers (diarize)")
    known_speaker_names: tuple[str, ...] = Field(
        (),
        max_length=16,
        description="Names of known speakers, one per known_speaker_references clip",
    )
    known_speaker_references: tuple[str, ...] = Field(
        (),
        max_length=16,
        description="Short audio clips of the known speakers as data URLs "
        "(data:audio/wav;base64,…); multipart requests may upload them as files",
    )
    multichannel: bool = Field(
        False,
        description="Transcribe each channel on its own and label segments and words with "
        "their channel",
    )

    @field_validator("known_speaker_names", "known_speaker_references", mode="before")
    @classmethod
    def _string_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [value] if value else []
        return value

    @field_validator("known_speaker_names")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(v.strip() for v in value)
        if any(not n or len(n) > 64 or set(n) & set("<>&") for n in names):
            raise ValueError("each known speaker name must have 1-64 characters, none of <>&")
        if len(set(names)) != len(names):
            raise ValueError("known speaker names must differ")
        return names

    @model_validator(mode="after")
    def _speakers_consistent(self) -> SpeakerOptions:
        speaker_fields = (self.num_speakers, self.min_speakers, self.max_speakers)
        named = self.known_speaker_names or self.known_speaker_references
        if not self.diarize and (any(v is not None for v in speaker_fields) or named):
            raise ValueError("num_speakers, min/max_speakers and known speakers need diarize=true")
        if len(self.known_speaker_names) != len(self.known_speaker_references):
            raise ValueError(
                "known_speaker_names and known_speaker_references must have one entry each"
            )
        if self.diarize and self.multichannel:
            raise ValueError(
                "diarize and multichannel cannot be combined: channels label the speakers"
            )
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise ValueError("min_speakers must be <= max_speakers")
        if self.num_speakers is not None and (self.min_speakers or self.max_speakers):
            raise ValueError("give num_speakers or min/max_speakers, not both")
        if self.num_speakers is not None and len(self.known_speaker_names) > self.num_speakers:
            raise ValueError("more known speakers than num_speakers")
        return self
