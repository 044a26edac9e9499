//! What a script defines can be pickled, as in a plain `python script.py` run: its functions
//! go to multiprocessing and concurrent.futures workers, its classes through pickle. Over real
//! HTTP, in the real jail.

mod common;

use common::Server;
use serde_json::json;

#[tokio::test]
async fn a_pool_maps_a_function_the_script_defines() {
    let server = Server::start().await;
    let script = "\
import multiprocessing

def square(x):
    return x * x

def main():
    with multiprocessing.Pool(2) as pool:
        return {'squares': pool.map(square, range(6))}
";
    let (status, body) = server.execute(script, None).await;
    assert_eq!((status, &body["result"]), (200, &json!({"squares": [0, 1, 4, 9, 16, 25]})), "{body}");
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn a_process_pool_executor_runs_a_function_the_script_defines() {
    let server = Server::start().await;
    let script = "\
from concurrent.futures import ProcessPoolExecutor

def double(x):
    return 2 * x

def main():
    with ProcessPoolExecutor(max_workers=2) as executor:
        return {'doubled': list(executor.map(double, [1, 2, 3]))}
";
    let (status, body) = server.execute(script, None).await;
    assert_eq!((status, &body["result"]), (200, &json!({"doubled": [2, 4, 6]})), "{body}");
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn a_dataclass_the_script_defines_round_trips_through_pickle() {
    let server = Server::start().await;
    let script = "\
import pickle
from dataclasses import dataclass

@dataclass
class Point:
    x: int
    y: int

def main():
    back = pickle.loads(pickle.dumps(Point(3, 4)))
    return {'same': back == Point(3, 4), 'type': type(back).__qualname__, 'module': Point.__module__}
";
    let (status, body) = server.execute(script, None).await;
    assert_eq!(
        (status, &body["result"]),
        (200, &json!({"same": true, "type": "Point", "module": "__pyexec__"})),
        "{body}"
    );
}

#[tokio::test]
async fn a_main_guard_does_not_run_main_a_second_time() {
    let server = Server::start().await;
    let script = "\
def main():
    print('main ran')
    return {'ok': True}

if __name__ == '__main__':
    main()
";
    let (status, body) = server.execute(script, None).await;
    assert_eq!((status, &body["result"]), (200, &json!({"ok": true})), "{body}");
    assert_eq!(body["stdout"], "main ran\n", "main() ran once: {body}");
}
