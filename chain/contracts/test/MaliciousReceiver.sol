// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title MaliciousReceiver (test only): re-enters a target from its receive() hook.
/// @notice `act` forwards a call (with value) to a target. When it receives ether it calls
/// `reentryTarget` with `reentryData` once; `bubble` decides whether a failed re-entry reverts the payment.
contract MaliciousReceiver {
    address public reentryTarget;
    bytes public reentryData;
    bool public bubble;
    bool public reentered;
    bool public reentryOk;
    uint256 public received;

    function arm(address target, bytes calldata data, bool bubble_) external {
        reentryTarget = target;
        reentryData = data;
        bubble = bubble_;
    }

    function act(address target, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = target.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
        return ret;
    }

    receive() external payable {
        received += msg.value;
        if (reentryTarget != address(0) && !reentered) {
            reentered = true;
            (bool ok, bytes memory ret) = reentryTarget.call(reentryData);
            reentryOk = ok;
            if (!ok && bubble) {
                assembly {
                    revert(add(ret, 32), mload(ret))
                }
            }
        }
    }
}
