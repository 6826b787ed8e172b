// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title TestMulticall3
/// @notice The read-only subset of the Multicall3 interface that the x402
/// reference facilitator and viem use (`tryAggregate`, `aggregate3`,
/// `getBlockNumber`, `getCurrentBlockTimestamp`, `getEthBalance`), written for
/// toolgate's end-to-end tests. Its runtime code is placed with
/// `anvil_setCode` at the canonical Multicall3 address
/// 0xcA11bde05977b3631167028862bE2a173976CA11, which a fresh anvil chain lacks.
contract TestMulticall3 {
    struct Call {
        address target;
        bytes callData;
    }

    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    function tryAggregate(bool requireSuccess, Call[] calldata calls)
        external
        payable
        returns (Result[] memory returnData)
    {
        returnData = new Result[](calls.length);
        for (uint256 i = 0; i < calls.length; i++) {
            (bool ok, bytes memory ret) = calls[i].target.call(calls[i].callData);
            if (requireSuccess) {
                require(ok, "Multicall3: call failed");
            }
            returnData[i] = Result(ok, ret);
        }
    }

    function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory returnData) {
        returnData = new Result[](calls.length);
        for (uint256 i = 0; i < calls.length; i++) {
            (bool ok, bytes memory ret) = calls[i].target.call(calls[i].callData);
            require(ok || calls[i].allowFailure, "Multicall3: call failed");
            returnData[i] = Result(ok, ret);
        }
    }

    function getBlockNumber() external view returns (uint256) {
        return block.number;
    }

    function getCurrentBlockTimestamp() external view returns (uint256) {
        return block.timestamp;
    }

    function getEthBalance(address addr) external view returns (uint256) {
        return addr.balance;
    }
}
