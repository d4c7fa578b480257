import cv2
import numpy as np
import pytest

from core import numbers


def number_image(n_digits: int, gap: int = 30) -> np.ndarray:
    img = np.full((120, 60 + n_digits * (40 + gap)), 255, np.uint8)
    for k in range(n_digits):
        x = 30 + k * (40 + gap)
        cv2.line(img, (x + 20, 20), (x + 20, 100), 0, 8)
    return img


@pytest.mark.parametrize("n", [1, 2, 3])
def test_split_counts_and_orders_digits(n):
    splits = numbers.split_digits(number_image(n))
    assert len(splits) == n
    xs = [s.box[0] for s in splits]
    assert xs == sorted(xs)
    assert all(min(s.image.shape) >= 8 for s in splits)


def test_loose_stroke_above_a_digit_stays_with_it():
    img = np.full((120, 100), 255, np.uint8)
    cv2.line(img, (30, 50), (30, 100), 0, 8)  # the body of a "5"
    cv2.line(img, (30, 20), (70, 20), 0, 8)  # its bar, not touching
    assert len(numbers.split_digits(img)) == 1


def test_specks_are_noise_not_digits():
    img = number_image(2)
    img[5, 5] = 0
    assert len(numbers.split_digits(img)) == 2


def test_blank_has_no_digits():
    assert numbers.split_digits(np.full((50, 100), 255, np.uint8)) == []


@pytest.mark.parametrize("name, label", [("127_0001.png", 127), ("0_a.png", 0), ("303.png", 303),
                                         ("scan.png", None), ("12a.png", None)])
def test_label_from_file_name(name, label):
    assert numbers.label_from_name(name) == label


def test_builtin_numbers_split_exactly():
    images, labels = numbers.compose_numbers(n=60, random_state=1)
    assert labels.min() >= 0 and labels.max() <= 303
    assert [len(numbers.split_digits(i)) for i in images] == [len(str(v)) for v in labels]


class OneReader:
    def predict_proba(self, X):
        p = np.zeros((len(X), 10), np.float32)
        p[:, 1] = 1
        return p


def test_read_and_evaluate_numbers_with_a_model_that_always_says_one():
    r = numbers.read_number(OneReader(), number_image(3), "paper")
    assert r.number == 111 and r.digits == (1, 1, 1)
    out = numbers.evaluate_numbers(OneReader(), [number_image(2), number_image(3)], np.array([11, 112]), "paper")
    assert out["accuracy"] == 0.5
    assert out["per_length"] == [{"digits": 2, "n": 1, "accuracy": 1.0}, {"digits": 3, "n": 1, "accuracy": 0.0}]


def test_numbers_folder_labels_from_names_and_skips_the_rest(tmp_path):
    cv2.imwrite(str(tmp_path / "12_0001.png"), number_image(2))
    (tmp_path / "notes.txt").write_text("x")
    cv2.imwrite(str(tmp_path / "scan.png"), number_image(1))
    (tmp_path / "7_link.png").symlink_to(tmp_path / "scan.png")
    images, labels, names, skipped = numbers.load_numbers_folder(tmp_path)
    assert labels.tolist() == [12] and names == ["12_0001.png"]
    assert sorted(s.split(":")[0] for s in skipped) == ["7_link.png", "notes.txt", "scan.png"]
