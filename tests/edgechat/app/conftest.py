"""Fixtures of the app-floor tests."""
import pytest

from edgechat.app.teacher_data import teacher_conversations


@pytest.fixture(scope="session")
def stories_data(stories_model, tmp_path_factory):
    """Eight conversations stories260K wrote itself (six chit-chat prompts, two Magpie ones), 32-token replies."""
    return teacher_conversations(stories_model, n=8, seed=0, magpie_share=0.25, reply_tokens=32,
                                 cache=tmp_path_factory.mktemp("teacher-data"))
