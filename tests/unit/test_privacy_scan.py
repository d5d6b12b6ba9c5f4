"""The scanner the integration tests rely on must actually find personal data."""

from fanpin.privacy import Pseudonymiser, mask_id_number
from tests.helpers import find_personal_data


def test_scanner_finds_ids_and_names_inside_longer_text() -> None:
    ids, names = {"99012219911008334X"}, {"余刚江", "丁华"}
    assert find_personal_data('{"x":"a99012219911008334xb"}', ids, names) == [
        "99012219911008334X"]
    assert find_personal_data("患者余刚江住院", ids, names) == ["余刚江"]
    assert find_personal_data("丁华", ids, names) == ["丁华"]
    assert find_personal_data("990122********334X 余刚", ids, names) == []


def test_pseudonyms_are_keyed_and_stable() -> None:
    a, b = Pseudonymiser(b"k" * 32), Pseudonymiser(b"j" * 32)
    assert a.person("99012219911008334X") == a.person("99012219911008334x ")
    assert a.person("99012219911008334X") != b.person("99012219911008334X")
    assert "334X" not in a.person("99012219911008334X")
    assert mask_id_number("99012219911008334X") == "990122********334X"


def test_pseudonym_is_hmac_sha256_of_the_id_number() -> None:
    import hashlib
    import hmac

    for key in (b"k" * 16, b"x" * 64, b"y" * 65, bytes(range(200))):
        for idn in ("990122198207193090", " 99012219820719309x "):
            want = hmac.new(key, idn.strip().upper().encode(), hashlib.sha256).hexdigest()[:31]
            assert Pseudonymiser(key).person(idn) == "p" + want
