"""PicklableLock: pickles and deep-copies as a new, released lock of the same kind."""

import copy
import pickle

import pytest

from spacy_elmo.locks import PicklableLock


@pytest.mark.parametrize("reentrant", [False, True])
def test_a_copy_of_a_held_lock_is_a_released_lock_of_its_own(reentrant):
    lock = PicklableLock(reentrant=reentrant)
    with lock:
        for other in (pickle.loads(pickle.dumps(lock)), copy.deepcopy(lock)):
            assert other.reentrant == reentrant and type(other._lock) is type(lock._lock)
            assert other._lock is not lock._lock
            assert other._lock.acquire(blocking=False), "the copy started out held"
            other._lock.release()
        again = lock._lock.acquire(blocking=False)  # only an RLock lets its holder in again
        if again:
            lock._lock.release()
        assert again == reentrant
